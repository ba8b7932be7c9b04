"""What the Hotel handlers share: the hotel's body from the spec, and mirroring the provisioning
document into the status (conditions, facts) with one Event per condition that changed."""

from __future__ import annotations

from typing import Any

import kopf

from roomee.operator import conditions
from roomee.operator.conditions import READY, Condition

# spec path -> the hotel API's field (PATCH /hotel/{id} and the drift check compare these).
HOTEL_FIELDS = {
    ("name",): "name",
    ("contact", "email"): "email",
    ("contact", "phone"): "phone",
    ("contact", "address"): "address",
    ("plan",): "plan",
}
FACTS = ("qrLink", "subscriptionId", "adminMemberId")


def idempotency_key(uid: str) -> str:
    """The ``Idempotency-Key`` of a Hotel's ``POST /hotel/add``: the hotel service finds (and
    deletes) the hotel by it even when its id never reached the status."""
    return f"hotel-{uid}"


def _at(spec: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        spec = spec.get(key) if isinstance(spec, dict) else None
    return spec


def wanted_fields(spec: dict[str, Any]) -> dict[str, Any]:
    return {field: _at(spec, path) for path, field in HOTEL_FIELDS.items() if _at(spec, path) is not None}


def add_body(spec: dict[str, Any]) -> dict[str, Any]:
    """``POST /hotel/add`` from a Hotel spec (no password: the administrator is invited)."""
    administrator = dict(spec["administrator"])
    body = {**wanted_fields(spec), "administrator": administrator}
    for optional in ("type", "settings"):
        if spec.get(optional) is not None:
            body[optional] = spec[optional]
    return body


def differences(wanted: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any]:
    return {field: value for field, value in wanted.items() if actual.get(field) != value}


def post_events(body: Any, changed: list[dict]) -> None:
    """One Event per real change: a step done or failing, Ready reached or lost. A step waiting or
    running (Unknown) and Ready's "still provisioning" are in the conditions, not worth an Event."""
    for condition in changed:
        if condition["status"] == "Unknown" or (condition["type"] == READY and condition["reason"] == "Provisioning"):
            continue
        message = f"{condition['type']}={condition['status']}: {condition['message']}"
        failing = condition["status"] == "False" and condition["reason"] not in ("Provisioning", "Deleting")
        if failing:
            kopf.warn(body, reason=condition["reason"], message=message)
        else:
            kopf.event(body, type="Normal", reason=condition["reason"], message=message)


def set_conditions(body: Any, patch: kopf.Patch, updates: list[Condition], generation: int | None) -> list[dict]:
    """Apply ``updates`` to the object's conditions in ``patch`` and post Events for what changed."""
    before = list((body.get("status") or {}).get("conditions") or [])
    after = conditions.merged(before, updates, generation)
    patch.status["conditions"] = after
    post_events(body, conditions.transitions(before, after))
    return after


def mirror(body: Any, patch: kopf.Patch, document: dict[str, Any], generation: int | None) -> None:
    """The provisioning document into the status: facts and one condition per step, then Ready."""
    patch.status["hotelId"] = document["hotelId"]
    for fact in FACTS:
        if document.get(fact):
            patch.status[fact] = document[fact]
    set_conditions(body, patch, conditions.provisioning_conditions(document), generation)


def not_found(body: Any, patch: kopf.Patch, hotel_id: str, generation: int | None) -> None:
    set_conditions(body, patch, [Condition(READY, "False", "NotFound",
                                           f"hotel {hotel_id} no longer exists in the hotel service")], generation)
