"""The CRDs' openAPIV3Schema accepts every example and refuses bad manifests (checked with
jsonschema and the CEL rules, since kmock itself validates nothing)."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.fixtures.kube import CRD_DIR, load_crds, load_yaml_documents, served_version, validation_errors

CRDS = load_crds()
EXAMPLES = sorted((CRD_DIR / "examples").glob("*.yaml"))
HOTEL = load_yaml_documents(CRD_DIR / "examples" / "hotel.yaml")[0]
WORKSPACE = load_yaml_documents(CRD_DIR / "examples" / "workspace.yaml")[0]


def changed(document: dict, path: str, value) -> dict:
    """A copy of ``document`` with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    result = copy.deepcopy(document)
    *parents, last = path.split(".")
    node = result
    for part in parents:
        node = node.setdefault(part, {})
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = value
    return result


def test_both_crds_are_in_group_roomee_io_with_status_columns_short_names_and_category():
    assert set(CRDS) == {"Hotel", "Workspace"}
    for crd in CRDS.values():
        assert crd["spec"]["group"] == "roomee.io"
        assert crd["spec"]["scope"] == "Namespaced"
        assert "roomee" in crd["spec"]["names"]["categories"]
        assert crd["spec"]["names"]["shortNames"]
        version = served_version(crd)
        assert version["subresources"] == {"status": {}}
        columns = [column["name"] for column in version["additionalPrinterColumns"] if not column.get("priority")]
        assert columns[0] == "Ready" and columns[-1] == "Age"
    hotel_columns = [c["name"] for c in served_version(CRDS["Hotel"])["additionalPrinterColumns"] if not c.get("priority")]
    assert hotel_columns == ["Ready", "Plan", "Age"]  # the QR URL (80 characters) only with -o wide


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_valid(path):
    for document in load_yaml_documents(path):
        assert validation_errors(CRDS[document["kind"]], document) == []


def test_no_password_field_anywhere_in_the_hotel_spec():
    text = yaml.safe_dump(served_version(CRDS["Hotel"])["schema"]).lower()
    assert "password" not in text.replace("no password", "")


INVALID_HOTELS = {
    "no plan": ("spec.plan", ...),
    "unknown plan": ("spec.plan", "platinum"),
    "empty name": ("spec.name", ""),
    "no contact": ("spec.contact", ...),
    "no phone": ("spec.contact.phone", ...),
    "empty address": ("spec.contact.address", ""),
    "contact email not an email": ("spec.contact.email", "not-an-email"),
    "phone with letters": ("spec.contact.phone", "call me maybe"),
    "no administrator": ("spec.administrator", ...),
    "administrator without email": ("spec.administrator.email", ...),
    "administrator password in the spec": ("spec.administrator.password", "hunter2"),
    "locale not a locale": ("spec.administrator.locale", "French"),
    "unknown spec field": ("spec.colour", "blue"),
    "unknown type": ("spec.type", "castle"),
    "no spec": ("spec", ...),
    "condition with a prose reason": ("status.conditions", [{"type": "Ready", "status": "True", "reason": "all good",
                                                              "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]),
    "condition status not True/False/Unknown": ("status.conditions", [{"type": "Ready", "status": "Yes", "reason": "Ok",
                                                                        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]),
    "a phase enum": ("status.phase", "Ready"),
}


@pytest.mark.parametrize("case", INVALID_HOTELS, ids=list(INVALID_HOTELS))
def test_invalid_hotels_are_refused(case):
    path, value = INVALID_HOTELS[case]
    assert validation_errors(CRDS["Hotel"], changed(HOTEL, path, value)) != []


INVALID_WORKSPACES = {
    "no hotelRef": ("spec.hotelRef", ...),
    "hotelRef not a name": ("spec.hotelRef.name", "Grand Paris!"),
    "no name": ("spec.name", ...),
    "time zone with spaces": ("spec.timeZone", "Paris time"),
    "unknown field": ("spec.members", ["a"]),
}


@pytest.mark.parametrize("case", INVALID_WORKSPACES, ids=list(INVALID_WORKSPACES))
def test_invalid_workspaces_are_refused(case):
    path, value = INVALID_WORKSPACES[case]
    assert validation_errors(CRDS["Workspace"], changed(WORKSPACE, path, value)) != []


def test_the_administrator_may_not_change_but_the_plan_and_contact_may():
    other_admin = changed(HOTEL, "spec.administrator.email", "someone-else@grand-paris.example.com")
    errors = validation_errors(CRDS["Hotel"], other_admin, old=HOTEL)
    assert errors and "immutable" in errors[0]
    assert validation_errors(CRDS["Hotel"], other_admin) == []  # a new object may name anyone
    upgraded = changed(changed(HOTEL, "spec.plan", "standard"), "spec.contact.phone", "+33 9 99 99 99 99")
    assert validation_errors(CRDS["Hotel"], upgraded, old=HOTEL) == []


def test_a_workspace_may_not_move_to_another_hotel():
    moved = changed(WORKSPACE, "spec.hotelRef.name", "seaside-inn")
    errors = validation_errors(CRDS["Workspace"], moved, old=WORKSPACE)
    assert errors and "immutable" in errors[0]
    renamed = changed(WORKSPACE, "spec.name", "Front desk")
    assert validation_errors(CRDS["Workspace"], renamed, old=WORKSPACE) == []
