"""A Hotel the hotel service refuses is fixed by editing it: the edit is submitted again.

The CRD refuses what the hotel service refuses, so the refusal is reached the way an older, laxer
CRD would let it through: the test serves a copy of the Hotel CRD without the contact email rules.
"""

from __future__ import annotations

import copy
import json

import yaml

from tests.fixtures.kube import CRD_DIR, load_yaml_documents, served_version
from tests.k8s_operator.test_hotel_lifecycle import EXAMPLE, NAME, condition, platform_and_operator, stored

SPECIAL_USE_EMAIL = "hello@seaside-inn.test"  # pydantic's EmailStr refuses special-use domains


def lax_hotel_crd() -> str:
    """The Hotel CRD without the validation of ``spec.contact.email`` (type string only)."""
    crd = copy.deepcopy(load_yaml_documents(CRD_DIR / "hotels.roomee.io.yaml")[0])
    spec = served_version(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["contact"]["properties"]["email"] = {"type": "string"}
    return yaml.safe_dump(crd)


def invalid_hotel() -> str:
    hotel = yaml.safe_load(open(EXAMPLE))
    hotel["spec"]["contact"]["email"] = SPECIAL_USE_EMAIL
    return yaml.safe_dump(hotel)


async def test_rejected_hotel_is_submitted_again_once_its_spec_is_fixed(tmp_path, kube, monkeypatch):
    await kube.kubectl("apply", "--validate=false", "-f", "-", stdin=lax_hotel_crd())
    async with platform_and_operator(tmp_path, kube, monkeypatch) as platform:
        await kube.kubectl("apply", "--validate=false", "-f", "-", stdin=invalid_hotel())
        await kube.kubectl("wait", "--for=jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=Rejected",
                           f"hotel/{NAME}", "--timeout=60s")
        rejected = stored(kube)
        assert rejected["status"]["observedGeneration"] == rejected["metadata"]["generation"] == 1
        assert "hotelId" not in rejected["status"]
        assert "email" in condition(rejected, "Ready")["message"]
        assert any(e["type"] == "Warning" and e["reason"] == "Rejected" for e in kube.api.events_for(NAME))

        await kube.kubectl("patch", "hotel", NAME, "--type=merge",
                           "-p", '{"spec":{"contact":{"email":"hello@seaside-inn.example.com"}}}')
        await kube.kubectl("wait", "--for=condition=Ready", f"hotel/{NAME}", "--timeout=60s")

        hotel = json.loads((await kube.kubectl("get", "hotel", NAME, "-o", "json")).stdout)
        assert hotel["metadata"]["generation"] == 2
        assert hotel["status"]["observedGeneration"] == 2
        assert all(c["observedGeneration"] == 2 for c in hotel["status"]["conditions"])
        async with platform.client() as client:
            found = (await client.get("/hotel", headers=await platform.service_headers("operator"))).json()["items"]
            assert [(h["id"], h["email"], h["status"]) for h in found] == [
                (hotel["status"]["hotelId"], "hello@seaside-inn.example.com", "ready")]
