"""Deleting a Hotel at any moment leaves no tenant: before the POST reaches the hotel service,
with the POST's answer lost past the client timeout, mid-saga and during compensation, each with
and without an operator killed in between. Counted in the platform: no hotel left in the hotel
service, and for every hotel that existed meanwhile no member, no live subscription, no storage."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from roomee.operator import hotels
from tests.fixtures.kube import load_yaml_documents, operator_running
from tests.hotel.support import FaultProxy, platform_behind_proxy
from tests.k8s_operator.test_hotel_lifecycle import EXAMPLE, NAME, PATIENT_SAGA, eventually, stored

# The operator's client gives up on an answer after 1 s (production: 3 s).
SHORT_TIMEOUT = {"http_timeout_ms": 1000}


class HotelWatch:
    """Every hotel id the hotel service lists while the test runs (a deleted hotel leaves the list)."""

    def __init__(self, platform) -> None:
        self.platform, self.seen, self._task = platform, set(), None

    async def _poll(self) -> None:
        async with self.platform.client() as client:
            headers = await self.platform.service_headers("operator")
            while True:
                page = (await client.get("/hotel", headers=headers, params={"limit": 200})).json()
                self.seen |= {hotel["id"] for hotel in page["items"]}
                await asyncio.sleep(0.02)

    async def __aenter__(self):
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *_):
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def left_behind(self) -> list[str]:
        """What still exists of any hotel seen: the hotel, members, a live subscription, storage."""
        left = []
        async with self.platform.client() as client:
            operator = await self.platform.service_headers("operator")
            headers = await self.platform.service_headers("hotel")
            listed = (await client.get("/hotel", headers=operator, params={"limit": 200})).json()["items"]
            left += [f"hotel {hotel['id']} ({hotel['status']})" for hotel in listed]
            for hotel_id in self.seen:
                members = (await client.get(f"/members/get/by/hotel_id/{hotel_id}", headers=headers)).json()
                left += [f"member {m['id']} of {hotel_id}" for m in members["items"]]
                subscription = await client.get(f"/sub/customers/{hotel_id}/subscription", headers=headers)
                if subscription.status_code == 200 and subscription.json()["status"] != "canceled":
                    left.append(f"subscription of {hotel_id} ({subscription.json()['status']})")
                if (await client.get(f"/media/storage/{hotel_id}", headers=headers)).status_code != 404:
                    left.append(f"storage of {hotel_id}")
        return left


async def delete_and_wait(kube) -> None:
    await kube.kubectl("delete", "hotel", NAME, "--wait=false")
    await eventually(lambda: stored(kube) is None, timeout=90)


@contextlib.asynccontextmanager
async def operator_through(monkeypatch, kube, platform, to_hotel: FaultProxy, **overrides):
    async with operator_running(monkeypatch, kube, platform.settings, hotel_url=to_hotel.url,
                                **{**SHORT_TIMEOUT, **overrides}) as task:
        yield task


async def kill(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_delete_before_the_post_reaches_the_hotel_service_creates_nothing(tmp_path, kube, monkeypatch):
    async with platform_behind_proxy(tmp_path / "platform", monkeypatch, **PATIENT_SAGA) as (platform, _):
        to_hotel = FaultProxy(platform.url)
        async with to_hotel.serving(), HotelWatch(platform) as watch:
            held = to_hotel.hold("POST", "/hotel/add", drop=True)  # held, never forwarded
            async with operator_through(monkeypatch, kube, platform, to_hotel):
                await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
                await asyncio.wait_for(held.reached.wait(), 30)
                uid = stored(kube)["metadata"]["uid"]
                await delete_and_wait(kube)  # the POST timed out; the delete marked its key deleted
            to_hotel.release(held)
            # The same POST reaching the hotel service late (a retry, a slow network) creates nothing.
            async with platform.client() as client:
                late = await client.post("/hotel/add", json=hotels.add_body(load_yaml_documents(Path(EXAMPLE))[0]["spec"]),
                                         headers={**await platform.service_headers("operator"),
                                                  "Idempotency-Key": hotels.idempotency_key(uid)})
            assert (late.status_code, late.json()["error"]) == (410, "idempotency_key_deleted")
            assert watch.seen == set() and await watch.left_behind() == []
        assert "Deprovisioned" in {e["reason"] for e in kube.api.events_for(NAME)}


async def _answer_lost_then_deleted(tmp_path, kube, monkeypatch, *, kill_operator: bool) -> None:
    async with platform_behind_proxy(tmp_path / "platform", monkeypatch, **PATIENT_SAGA) as (platform, _):
        to_hotel = FaultProxy(platform.url)
        async with to_hotel.serving(), HotelWatch(platform) as watch:
            held = to_hotel.hold("POST", "/hotel/add", after=True, times=None)  # every answer lost
            async with operator_through(monkeypatch, kube, platform, to_hotel) as first:
                await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
                await asyncio.wait_for(held.reached.wait(), 30)
                await eventually(lambda: watch.seen, timeout=30)  # the hotel exists, its id unknown
                await kube.kubectl("delete", "hotel", NAME, "--wait=false")
                if kill_operator:
                    await kill(first)
            if kill_operator:
                async with operator_through(monkeypatch, kube, platform, to_hotel):
                    await eventually(lambda: stored(kube) is None, timeout=90)
            assert stored(kube) is None or not kill_operator
            if stored(kube) is not None:
                async with operator_through(monkeypatch, kube, platform, to_hotel):
                    await eventually(lambda: stored(kube) is None, timeout=90)
            to_hotel.clear()
            assert len(watch.seen) == 1 and await watch.left_behind() == []


async def test_delete_with_the_posts_answer_lost_deletes_the_hotel_it_made(tmp_path, kube, monkeypatch):
    await _answer_lost_then_deleted(tmp_path, kube, monkeypatch, kill_operator=False)


async def test_delete_with_the_posts_answer_lost_and_the_operator_killed(tmp_path, kube, monkeypatch):
    await _answer_lost_then_deleted(tmp_path, kube, monkeypatch, kill_operator=True)


async def _deleted_mid_saga(tmp_path, kube, monkeypatch, *, compensating: bool, kill_operator: bool) -> None:
    async with platform_behind_proxy(tmp_path / "platform", monkeypatch, **PATIENT_SAGA) as (platform, proxy):
        if compensating:  # members refuses the administrator: the saga undoes what it did, slowly
            proxy.fail("POST", "/members/add/hotel/member", status=422)
            held = proxy.hold("DELETE", r"/members/by/hotel_id/[^/]+", times=None)
        else:  # billing holds the subscription request: the saga waits in its middle
            held = proxy.hold("POST", r"/sub/assign-subscription/?", times=None)
        async with HotelWatch(platform) as watch:
            async with operator_running(monkeypatch, kube, platform.settings) as first:
                await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
                await asyncio.wait_for(held.reached.wait(), 30)
                await kube.kubectl("delete", "hotel", NAME, "--wait=false")
                if kill_operator:
                    await kill(first)
                else:
                    proxy.release(held)
                    await eventually(lambda: stored(kube) is None, timeout=90)
            if kill_operator:
                proxy.release(held)
                async with operator_running(monkeypatch, kube, platform.settings):
                    await eventually(lambda: stored(kube) is None, timeout=90)
            proxy.clear()
            assert len(watch.seen) == 1 and await watch.left_behind() == []


async def test_delete_mid_saga(tmp_path, kube, monkeypatch):
    await _deleted_mid_saga(tmp_path, kube, monkeypatch, compensating=False, kill_operator=False)


async def test_delete_mid_saga_with_the_operator_killed(tmp_path, kube, monkeypatch):
    await _deleted_mid_saga(tmp_path, kube, monkeypatch, compensating=False, kill_operator=True)


async def test_delete_during_compensation(tmp_path, kube, monkeypatch):
    await _deleted_mid_saga(tmp_path, kube, monkeypatch, compensating=True, kill_operator=False)


async def test_delete_during_compensation_with_the_operator_killed(tmp_path, kube, monkeypatch):
    await _deleted_mid_saga(tmp_path, kube, monkeypatch, compensating=True, kill_operator=True)
