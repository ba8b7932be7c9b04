"""Hotels declared with kubectl and reconciled by the operator into tenants on the running platform.

Everything is real except the Kubernetes API server (kmock with the conformance layer): kubectl
from its wheel, kopf, the platform's HTTP services, and the FaultProxy of the hotel tests for faults.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

from tests.fixtures.kube import CRD_DIR, operator_running
from tests.fixtures.platform import make_settings, running_platform
from tests.hotel.support import FAST_SAGA, FaultProxy, platform_behind_proxy

EXAMPLE = str(CRD_DIR / "examples" / "hotel.yaml")
NAME = "grand-paris"
# The saga keeps retrying a failing provider for the length of these tests (production: 8 attempts).
PATIENT_SAGA = {**FAST_SAGA, "saga_max_attempts": 200, "saga_backoff_base_seconds": 0.05,
                "saga_backoff_max_seconds": 0.3, "breaker_reset_timeout_ms": 500}


async def eventually(check, timeout: float = 60.0, interval: float = 0.05):
    """``check()``'s first truthy result (awaited if need be) within ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        await asyncio.sleep(interval)


def stored(kube, plural: str = "hotels", name: str = NAME) -> dict | None:
    return next((o for o in kube.api.objects_of(plural) if o["metadata"]["name"] == name), None)


def condition(obj: dict | None, condition_type: str) -> dict:
    for found in ((obj or {}).get("status") or {}).get("conditions") or ():
        if found["type"] == condition_type:
            return found
    return {}


@asynccontextmanager
async def platform_and_operator(tmp_path, kube, monkeypatch, **overrides):
    settings = make_settings(tmp_path / "platform", **{**FAST_SAGA, **overrides})
    async with running_platform(settings) as platform, operator_running(monkeypatch, kube, settings):
        yield platform


async def test_apply_wait_ready_tenant_columns_and_delete_deprovisions(tmp_path, kube, monkeypatch):
    async with platform_and_operator(tmp_path, kube, monkeypatch) as platform:
        await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
        await kube.kubectl("wait", "--for=condition=Ready", f"hotel/{NAME}", "--timeout=60s")

        hotel = json.loads((await kube.kubectl("get", "hotel", NAME, "-o", "json")).stdout)
        status = hotel["status"]
        hotel_id = status["hotelId"]
        assert status["observedGeneration"] == hotel["metadata"]["generation"] == 1
        assert status["qrLink"] and status["subscriptionId"] and status["adminMemberId"]
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "Ready": "True", "QRReady": "True", "StorageReady": "True", "SubscriptionReady": "True", "AdminReady": "True"}
        assert all(c["reason"][0].isupper() and " " not in c["reason"] and c["lastTransitionTime"]
                   and c["observedGeneration"] == 1 for c in status["conditions"])
        assert "phase" not in status

        async with platform.client() as client:
            operator = await platform.service_headers("operator")
            hotel_scopes = await platform.service_headers("hotel")
            found = (await client.get(f"/hotel/{hotel_id}", headers=operator)).json()
            assert (found["status"], found["plan"], found["name"]) == ("ready", "premium", "Grand Hôtel Paris")
            qr = await client.get(status["qrLink"])
            assert qr.status_code == 200 and qr.content.startswith(b"\x89PNG")
            storage = (await client.get(f"/media/storage/{hotel_id}", headers=hotel_scopes)).json()
            assert (storage["maxSize"], storage["unit"]) == (20000, "MO")
            subscription = (await client.get(f"/sub/customers/{hotel_id}/subscription", headers=hotel_scopes)).json()
            assert (subscription["id"], subscription["productId"]) == (status["subscriptionId"], "premium")
            members = (await client.get(f"/members/get/by/hotel_id/{hotel_id}", headers=hotel_scopes)).json()["items"]
            assert [(m["id"], m["email"], m["isAdmin"]) for m in members] == [
                (status["adminMemberId"], "direction@grand-paris.example.com", True)]

        table = (await kube.kubectl("get", "hotels")).stdout.splitlines()
        assert table[0].split() == ["NAME", "READY", "PLAN", "AGE"]
        assert table[1].split()[:3] == [NAME, "True", "premium"]
        wide = (await kube.kubectl("get", "hotels", "-o", "wide")).stdout.splitlines()
        assert wide[0].split()[:4] == ["NAME", "READY", "PLAN", "QR"] and wide[1].split()[3] == status["qrLink"]
        reasons = {event["reason"] for event in kube.api.events_for(NAME)}
        assert {"Accepted", "QRCodePublished", "QuotaCreated", "SubscriptionActive", "AdministratorInvited",
                "Provisioned"} <= reasons

        await kube.kubectl("delete", "hotel", NAME, "--timeout=60s")
        assert stored(kube) is None
        async with platform.client() as client:
            gone = await client.get(f"/hotel/{hotel_id}", headers=operator)
            assert gone.status_code == 404 or gone.json()["status"] == "deleted"
            assert (await client.get(f"/media/storage/{hotel_id}", headers=hotel_scopes)).status_code == 404
            subscription = await client.get(f"/sub/customers/{hotel_id}/subscription", headers=hotel_scopes)
            assert subscription.status_code == 404 or subscription.json()["status"] == "canceled"
            members = await client.get(f"/members/get/by/hotel_id/{hotel_id}", headers=hotel_scopes)
            assert members.json()["items"] == []
        assert "Deprovisioned" in {event["reason"] for event in kube.api.events_for(NAME)}


async def test_billing_down_reports_subscription_not_ready_then_ready_without_duplicate(tmp_path, kube, monkeypatch):
    async with platform_behind_proxy(tmp_path / "platform", monkeypatch, **PATIENT_SAGA) as (platform, proxy):
        proxy.fail("POST", r"/sub/assign-subscription/?", status=503)
        async with operator_running(monkeypatch, kube, platform.settings):
            await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
            failing = await eventually(lambda: condition(stored(kube), "SubscriptionReady").get("status") == "False"
                                       and stored(kube))
            subscription_condition = condition(failing, "SubscriptionReady")
            assert subscription_condition["reason"] == "Retrying" and "503" in subscription_condition["message"]
            assert condition(failing, "Ready")["status"] == "False"
            assert condition(failing, "StorageReady")["status"] == "True"
            warnings = await eventually(lambda: [e for e in kube.api.events_for(NAME)
                                                 if e["type"] == "Warning" and e["reason"] == "Retrying"])
            assert "SubscriptionReady=False" in warnings[0]["message"]

            proxy.clear()  # billing is back
            await kube.kubectl("wait", "--for=condition=Ready", f"hotel/{NAME}", "--timeout=60s")
            status = stored(kube)["status"]
            assert condition(stored(kube), "SubscriptionReady")["status"] == "True"
            assert proxy.count("POST", r"/sub/assign-subscription/?") >= 2
            successes = [entry for entry in proxy.log if entry[1].startswith("/sub/assign-subscription")
                         and entry[2] < 300]
            assert len(successes) == 1
            async with platform.client() as client:
                headers = await platform.service_headers("hotel")
                subscription = await client.get(f"/sub/customers/{status['hotelId']}/subscription", headers=headers)
                assert subscription.json()["id"] == status["subscriptionId"]
                hotels = (await client.get("/hotel", headers=await platform.service_headers("operator"))).json()
                assert [h["id"] for h in hotels["items"]] == [status["hotelId"]]


async def test_operator_killed_while_provisioning_then_restarted_makes_one_hotel(tmp_path, kube, monkeypatch):
    settings = make_settings(tmp_path / "platform", **FAST_SAGA)
    async with running_platform(settings) as platform:
        # The operator reaches the hotel service through a proxy that holds the answer of the first
        # POST /hotel/add: the hotel exists, the operator never learns its id, and is killed there.
        to_hotel = FaultProxy(settings.base_url)
        async with to_hotel.serving():
            held = to_hotel.hold("POST", "/hotel/add", after=True)
            # A generous client timeout: the first answer must be held, not given up on, before the kill.
            async with operator_running(monkeypatch, kube, settings, hotel_url=to_hotel.url,
                                        http_timeout_ms=30000) as first_operator:
                await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
                await asyncio.wait_for(held.reached.wait(), 30)
                first_operator.cancel()
                await asyncio.gather(first_operator, return_exceptions=True)
            assert "hotelId" not in (stored(kube).get("status") or {})
            to_hotel.release(held)

            async with operator_running(monkeypatch, kube, settings, hotel_url=to_hotel.url):
                await kube.kubectl("wait", "--for=condition=Ready", f"hotel/{NAME}", "--timeout=60s")
            assert to_hotel.count("POST", "/hotel/add") == 2  # the same Idempotency-Key twice

        status = stored(kube)["status"]
        async with platform.client() as client:
            hotels = (await client.get("/hotel", headers=await platform.service_headers("operator"))).json()["items"]
            assert [h["id"] for h in hotels] == [status["hotelId"]]
            headers = await platform.service_headers("hotel")
            subscription = (await client.get(f"/sub/customers/{status['hotelId']}/subscription", headers=headers)).json()
            assert subscription["id"] == status["subscriptionId"]
            members = (await client.get(f"/members/get/by/hotel_id/{status['hotelId']}", headers=headers)).json()
            assert len(members["items"]) == 1


async def test_plan_change_updates_subscription_quota_and_observed_generation(tmp_path, kube, monkeypatch):
    async with platform_and_operator(tmp_path, kube, monkeypatch) as platform:
        await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
        await kube.kubectl("wait", "--for=condition=Ready", f"hotel/{NAME}", "--timeout=60s")
        await kube.kubectl("patch", "hotel", NAME, "--type=merge", "-p", '{"spec":{"plan":"standard"}}')
        await kube.kubectl("wait", "--for=jsonpath={.status.observedGeneration}=2", f"hotel/{NAME}", "--timeout=60s")
        obj = stored(kube)
        assert obj["metadata"]["generation"] == 2
        assert all(c["observedGeneration"] == 2 for c in obj["status"]["conditions"])
        assert condition(obj, "Ready")["status"] == "True"
        hotel_id = obj["status"]["hotelId"]
        async with platform.client() as client:
            plans = {plan["id"]: plan for plan in (await client.get("/sub/plans")).json()}
            headers = await platform.service_headers("hotel")
            subscription = (await client.get(f"/sub/customers/{hotel_id}/subscription", headers=headers)).json()
            assert subscription["productId"] == "standard"

            async def quota_is_standard():
                storage = (await client.get(f"/media/storage/{hotel_id}", headers=headers)).json()
                return storage["maxSize"] == plans["standard"]["storageQuota"]["maxSize"]

            await eventually(quota_is_standard, timeout=30)
        assert "Updated" in {event["reason"] for event in kube.api.events_for(NAME)}
        assert "PLAN" in (await kube.kubectl("get", "hotel", NAME)).stdout
        assert "standard" in (await kube.kubectl("get", "hotel", NAME)).stdout


async def test_hotel_deleted_through_rest_is_reported_not_found(tmp_path, kube, monkeypatch):
    async with platform_and_operator(tmp_path, kube, monkeypatch) as platform:
        await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
        await kube.kubectl("wait", "--for=condition=Ready", f"hotel/{NAME}", "--timeout=60s")
        hotel_id = stored(kube)["status"]["hotelId"]
        async with platform.client() as client:
            deleted = await client.delete(f"/hotel/{hotel_id}", headers=await platform.service_headers("operator"))
            assert deleted.status_code == 202
        await kube.kubectl("wait", "--for=jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=NotFound",
                           f"hotel/{NAME}", "--timeout=60s")
        ready = condition(stored(kube), "Ready")
        assert ready["status"] == "False" and hotel_id in ready["message"]
        assert any(e["type"] == "Warning" and e["reason"] == "NotFound" for e in kube.api.events_for(NAME))
        await kube.kubectl("delete", "hotel", NAME, "--timeout=60s")  # nothing left to de-provision: it goes
        assert stored(kube) is None

