"""Faults at each provisioning step: transient ones are retried, permanent ones compensated in
reverse order with nothing left behind (no quota, QR object, subscription or member), and
``hotel.creation_failed`` is emitted. Faults come from a proxy in front of the real services."""

from __future__ import annotations

import asyncio
import subprocess
from contextlib import asynccontextmanager

import pytest

from roomee.kit.events import BrokerUnavailable
from tests.fixtures.events import event_tap
from tests.fixtures.platform import BACKEND
from tests.hotel.support import add_hotel, hotel_body, platform_behind_proxy, step, wait_for_status

UPLOAD = ("POST", "/media/upload")
ASSIGN = ("POST", "/sub/assign-subscription/")
ADD_ADMIN = ("POST", "/members/add/hotel/member")


async def assert_nothing_left(running, client, hotel_id: str, document: dict) -> None:
    as_hotel = await running.service_headers("hotel")
    assert (await client.get(f"/media/storage/{hotel_id}", headers=as_hotel)).status_code == 404
    qr = step(document, "qr")["externalId"]
    if qr:
        assert (await client.get(f"/media/{qr}", headers=as_hotel)).status_code == 404
    subscription = await client.get(f"/sub/customers/{hotel_id}/subscription", headers=as_hotel)
    assert subscription.status_code == 404 or subscription.json()["status"] == "canceled", subscription.text
    members = await client.get(f"/members/get/by/hotel_id/{hotel_id}", headers=as_hotel)
    assert members.json()["items"] == []


async def test_transient_failures_are_retried_with_backoff(tmp_path, monkeypatch):
    async with platform_behind_proxy(tmp_path, monkeypatch) as (running, proxy), running.client() as client:
        operator = await running.service_headers("operator")
        proxy.fail(*UPLOAD, status=503, times=1)
        proxy.fail(*ASSIGN, status=500, times=2)
        hotel_id = await add_hotel(client, operator)
        document = await wait_for_status(client, operator, hotel_id)
        assert document["status"] == "ready", document
        assert step(document, "qr")["attempts"] == 2 and step(document, "subscription")["attempts"] == 3
        assert step(document, "subscription")["lastError"] is None
        as_hotel = await running.service_headers("hotel")
        assert (await client.get(f"/sub/customers/{hotel_id}/subscription", headers=as_hotel)).status_code == 200


FAULTS = {
    "media-500": (UPLOAD, {"status": 500}, "qr", {}),
    "billing-500": (ASSIGN, {"status": 500}, "subscription", {}),
    # Billing answers after the caller's timeout (1 s here): the call counts as failed.
    "billing-timeout": (ASSIGN, {"status": 504, "delay": 2.5}, "subscription", {"http_timeout_ms": 1000}),
    "members-500": (ADD_ADMIN, {"status": 500}, "admin", {}),
    "members-refuses": (ADD_ADMIN, {"status": 409}, "admin", {}),
}


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
async def test_a_failing_step_is_compensated_in_reverse_order(tmp_path, monkeypatch, fault):
    (method, path), rule, failed_step, overrides = FAULTS[fault]
    async with platform_behind_proxy(tmp_path, monkeypatch, **overrides) as (running, proxy), \
            running.client() as client, event_tap(running) as tap:
        operator = await running.service_headers("operator")
        proxy.fail(method, path, **rule)
        hotel_id = await add_hotel(client, operator)
        document = await wait_for_status(client, operator, hotel_id)
        assert document["status"] == "failed", document
        names = [s["name"] for s in document["steps"]]
        failed_at = names.index(failed_step)
        assert step(document, failed_step)["status"] == "failed"
        # A 4xx is permanent at once; 5xx and timeouts are retried up to saga_max_attempts.
        assert step(document, failed_step)["attempts"] == (1 if rule["status"] < 500 else 3)
        assert 1 <= proxy.count(method, path) <= step(document, failed_step)["attempts"]
        assert [s["status"] for s in document["steps"][1:failed_at]] == ["compensated"] * (failed_at - 1)
        assert [s["status"] for s in document["steps"][failed_at + 1:]] == ["pending"] * (len(names) - failed_at - 1)
        assert document["error"].startswith(f"{failed_step}: ")

        failed = await tap.wait_for("roomee.notification.hotel.creation_failed", lambda e: e["ecosystemId"] == hotel_id,
                                    timeout=30)
        assert failed["payload"]["step"] == failed_step and failed["payload"]["error"] == document["error"]
        assert tap.of("roomee.notification.hotel.created") == []
        await assert_nothing_left(running, client, hotel_id, document)
        hotel = (await client.get(f"/hotel/{hotel_id}", headers=operator)).json()
        assert hotel["status"] == "failed" and hotel["error"] == document["error"]


async def test_a_failing_compensation_is_retried_until_done(tmp_path, monkeypatch):
    async with platform_behind_proxy(tmp_path, monkeypatch) as (running, proxy), running.client() as client:
        operator = await running.service_headers("operator")
        proxy.fail(*ASSIGN, status=500)
        proxy.fail("DELETE", r"/media/storage/.+", status=503, times=4)
        hotel_id = await add_hotel(client, operator)
        document = await wait_for_status(client, operator, hotel_id)
        assert document["status"] == "failed"
        assert proxy.count("DELETE", r"/media/storage/.+") >= 5
        assert step(document, "storage")["status"] == "compensated"
        await assert_nothing_left(running, client, hotel_id, document)


async def test_a_lost_answer_is_found_not_repeated(tmp_path, monkeypatch):
    """Billing creates the subscription but the answer never arrives (timeout): the retry finds it."""
    async with platform_behind_proxy(tmp_path, monkeypatch, http_timeout_ms=1000) as (running, proxy), \
            running.client() as client:
        operator = await running.service_headers("operator")
        proxy.delay(*ASSIGN, seconds=2.5, after=True, times=1)
        proxy.delay(*ADD_ADMIN, seconds=2.5, after=True, times=1)
        hotel_id = await add_hotel(client, operator)
        document = await wait_for_status(client, operator, hotel_id)
        assert document["status"] == "ready", document
        assert step(document, "subscription")["attempts"] == 2 and step(document, "admin")["attempts"] == 2
        assert proxy.count(*ASSIGN) == 1 and proxy.count(*ADD_ADMIN) == 1
        as_hotel = await running.service_headers("hotel")
        members = (await client.get(f"/members/get/by/hotel_id/{hotel_id}", headers=as_hotel)).json()["items"]
        assert [m["id"] for m in members] == [document["adminMemberId"]]


@asynccontextmanager
async def broker_outage(running, monkeypatch):
    """The broker is down: RabbitMQ's app stopped (real backend), or the embedded bus refusing publishes."""
    if BACKEND == "real":
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=30)
        try:
            yield
        finally:
            subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=60)
    else:
        broker = running.platform.broker

        async def refuse(_messages):
            raise BrokerUnavailable("embedded bus down (test)")

        monkeypatch.setattr(broker, "publish_batch", refuse)
        try:
            yield
        finally:
            monkeypatch.undo()


async def test_broker_down_delays_then_compensates_without_a_late_quota(tmp_path, monkeypatch):
    async with platform_behind_proxy(tmp_path, monkeypatch, hotel_storage_wait_seconds=0.5) as (running, proxy), \
            running.client() as client, event_tap(running) as tap:
        operator = await running.service_headers("operator")
        gate = proxy.hold("GET", "/sub/plans")  # the storage step's first call: start the outage there
        hotel_id = await add_hotel(client, operator)
        await asyncio.wait_for(gate.reached.wait(), 10)
        async with broker_outage(running, monkeypatch):
            proxy.release(gate)
            for _ in range(200):
                document = (await client.get(f"/hotel/{hotel_id}/provisioning", headers=operator)).json()
                if step(document, "storage")["status"] != "running":
                    break
                await asyncio.sleep(0.05)
        document = await wait_for_status(client, operator, hotel_id)
        assert document["status"] == "failed", document
        assert step(document, "storage")["status"] == "failed" and step(document, "storage")["attempts"] == 3
        assert "quota" in step(document, "storage")["lastError"]
        await tap.wait_for("roomee.notification.hotel.creation_failed", lambda e: e["ecosystemId"] == hotel_id,
                           timeout=30)
        await asyncio.sleep(1.0)  # the broker is back: a quota event, had it stayed, would land now
        assert [e for e in tap.of("roomee.storage.media") if e["ecosystemId"] == hotel_id] == []
        await assert_nothing_left(running, client, hotel_id, document)


async def test_delete_waits_for_provisioning_to_end(tmp_path, monkeypatch):
    async with platform_behind_proxy(tmp_path, monkeypatch) as (running, proxy), running.client() as client:
        operator = await running.service_headers("operator")
        gate = proxy.hold(*ASSIGN)
        hotel_id = await add_hotel(client, operator)
        await asyncio.wait_for(gate.reached.wait(), 30)
        early = await client.delete(f"/hotel/{hotel_id}", headers=operator)
        assert early.status_code == 409 and early.json()["error"] == "hotel_provisioning"
        assert early.headers["retry-after"]
        plan_change = await client.patch(f"/hotel/{hotel_id}", json={"plan": "free"}, headers=operator)
        assert plan_change.status_code == 409 and plan_change.json()["error"] == "hotel_not_ready"
        proxy.release(gate)
        assert (await wait_for_status(client, operator, hotel_id))["status"] == "ready"
        assert (await client.delete(f"/hotel/{hotel_id}", headers=operator)).status_code == 202
        await wait_for_status(client, operator, hotel_id, statuses=("deleted",))
