"""A hotel failed by a provider outage longer than a step's retry budget is not failed for good: its
saga waits (hotel ``failed`` with ``nextRetryAt``) and retries with capped exponential backoff until
the provider is back, or at once with ``POST /hotel/{id}/retry``; an undone hotel runs again as the
next generation. Deleting a waiting hotel ends its saga and leaves nothing."""

from __future__ import annotations

import asyncio
import time

from tests.billing.test_closure import stripe_leftovers
from tests.billing.test_faults import faulty  # noqa: F401 (fixture)
from tests.fixtures.people import make_admin
from tests.fixtures.platform import make_settings, running_platform
from tests.fixtures.stripe import WEBHOOK_SECRET, localstripe  # noqa: F401 (fixture)
from tests.hotel.support import FAST_SAGA, add_hotel, hotel_body, platform_behind_proxy, step, wait_for_status

ASSIGN = ("POST", "/sub/assign-subscription/")
ADD_ADMIN = ("POST", "/members/add/hotel/member")
# The saga's own retries give up within a second here (3 attempts from 50 ms); then it waits.
WAIT_SOON = {"saga_retry_later_base_seconds": 0.5, "saga_retry_later_max_seconds": 2.0,
             "saga_retry_later_limit_seconds": 3600.0}
# Waits far longer than any test: only POST /hotel/{id}/retry brings the next attempt.
WAIT_LONG = {"saga_retry_later_base_seconds": 3600.0, "saga_retry_later_max_seconds": 3600.0,
             "saga_retry_later_limit_seconds": 3600.0}


async def test_a_stripe_outage_longer_than_the_retry_budget_ends_ready_once_stripe_is_back(
        tmp_path, localstripe, faulty):  # noqa: F811
    await localstripe.reset()
    settings = make_settings(tmp_path, **{**FAST_SAGA, **WAIT_SOON}, billing_provider="stripe",
                             stripe_api_key=localstripe.api_key, stripe_api_url=faulty.url,
                             stripe_webhook_secret=WEBHOOK_SECRET, stripe_max_network_retries=0,
                             stripe_timeout_seconds=2.5)
    async with running_platform(settings) as running, running.client() as client:
        operator = await running.service_headers("operator")
        faulty.down = True  # every connection to Stripe is cut
        started = time.monotonic()
        hotel_id = await add_hotel(client, operator)
        waiting = await wait_for_status(client, operator, hotel_id, statuses=("failed",))
        gave_up_after = time.monotonic() - started
        # Failed, but waiting to retry, with nothing undone.
        assert waiting["nextRetryAt"] is not None, waiting
        assert waiting["error"].startswith("subscription: "), waiting
        assert step(waiting, "subscription")["attempts"] >= FAST_SAGA["saga_max_attempts"]
        assert step(waiting, "qr")["status"] == "succeeded" and step(waiting, "storage")["status"] == "succeeded"
        # Down for several retry rounds (0.5 s, 1 s, 2 s…) more: the hotel waits, and nothing is undone.
        attempts = step(waiting, "subscription")["attempts"]
        while time.monotonic() - started < 4 or step(waiting, "subscription")["attempts"] <= attempts:
            assert time.monotonic() - started < 60, waiting
            waiting = (await client.get(f"/hotel/{hotel_id}/provisioning", headers=operator)).json()
            assert waiting["status"] in ("failed", "provisioning"), waiting
            assert [s["status"] for s in waiting["steps"][:3]] == ["succeeded"] * 3, waiting
            await asyncio.sleep(0.1)
        faulty.down = False
        restored = time.monotonic()
        ready = await wait_for_status(client, operator, hotel_id, statuses=("ready",), timeout=60)
        print(f"\nretry timings: budget spent after {gave_up_after:.2f} s; outage {restored - started:.2f} s; "
              f"ready {time.monotonic() - restored:.2f} s after Stripe returned; "
              f"{step(ready, 'subscription')['attempts']} attempts")
        assert ready["nextRetryAt"] is None and ready["error"] is None
        customers, live = await stripe_leftovers(localstripe, hotel_id)
        assert len(customers) == 1 and [s["id"] for s in live] == [ready["subscriptionId"]]


async def test_the_retry_route_brings_a_waiting_hotel_forward(tmp_path, monkeypatch):
    async with platform_behind_proxy(tmp_path, monkeypatch, **WAIT_LONG) as (running, proxy), \
            running.client() as client:
        operator = await running.service_headers("operator")
        proxy.fail(*ASSIGN, status=503)
        hotel_id = await add_hotel(client, operator)
        waiting = await wait_for_status(client, operator, hotel_id, statuses=("failed",))
        assert waiting["nextRetryAt"] is not None
        proxy.clear()
        retried = await client.post(f"/hotel/{hotel_id}/retry", headers=operator)
        assert retried.status_code == 202, retried.text
        assert retried.json()["id"] == hotel_id
        ready = await wait_for_status(client, operator, hotel_id, statuses=("ready",), timeout=60)
        assert step(ready, "qr")["attempts"] == 1  # the QR made before the outage was kept, not redone
        again = await client.post(f"/hotel/{hotel_id}/retry", headers=operator)
        assert again.status_code == 409 and again.json()["error"] == "hotel_not_failed"


async def test_the_retry_route_runs_an_undone_hotel_again(tmp_path, monkeypatch):
    async with platform_behind_proxy(tmp_path, monkeypatch) as (running, proxy), running.client() as client:
        operator = await running.service_headers("operator")
        as_hotel = await running.service_headers("hotel")
        rule = proxy.fail(*ADD_ADMIN, status=409, times=1)  # permanent: the saga undoes everything
        hotel_id = await add_hotel(client, operator, hotel_body())
        failed = await wait_for_status(client, operator, hotel_id, statuses=("failed",))
        assert failed["nextRetryAt"] is None and step(failed, "subscription")["status"] == "compensated"
        assert rule.hits == 1
        retried = await client.post(f"/hotel/{hotel_id}/retry", headers=operator)
        assert retried.status_code == 202 and retried.json()["status"] == "provisioning", retried.text
        ready = await wait_for_status(client, operator, hotel_id, statuses=("ready",), timeout=60)
        assert [s["status"] for s in ready["steps"]] == ["succeeded"] * 6
        subscription = (await client.get(f"/sub/customers/{hotel_id}/subscription", headers=as_hotel)).json()
        assert subscription["id"] == ready["subscriptionId"] and subscription["status"] in ("active", "trialing")
        # A late request of the undone generation is refused by billing.
        late = await client.post("/sub/assign-subscription/", headers=as_hotel,
                                 json={"customerId": hotel_id, "productId": "premium", "generation": 0})
        assert late.status_code == 409 and late.json()["error"] == "customer_closed"


async def test_deleting_a_waiting_hotel_ends_its_saga_and_leaves_nothing(tmp_path, monkeypatch):
    async with platform_behind_proxy(tmp_path, monkeypatch, **WAIT_SOON) as (running, proxy), \
            running.client() as client:
        operator = await running.service_headers("operator")
        as_hotel = await running.service_headers("hotel")
        proxy.fail(*ASSIGN, status=503)
        hotel_id = await add_hotel(client, operator)
        await wait_for_status(client, operator, hotel_id, statuses=("failed",))
        deleted = await client.delete(f"/hotel/{hotel_id}", headers=operator)
        assert deleted.status_code == 202, deleted.text
        proxy.clear()  # billing answers again: a resumed provisioning would now create a subscription
        await wait_for_status(client, operator, hotel_id, statuses=("deleted",), timeout=60)
        assert (await client.post(f"/hotel/{hotel_id}/retry", headers=operator)).status_code == 404
        # Had the waiting saga been taken up again, it would have assigned the subscription by now.
        assigns_after = proxy.count(*ASSIGN)
        await wait_for_status(client, operator, hotel_id, statuses=("deleted",))
        subscription = await client.get(f"/sub/customers/{hotel_id}/subscription", headers=as_hotel)
        assert subscription.status_code == 404 or subscription.json()["status"] == "canceled", subscription.text
        late = await client.post("/sub/assign-subscription/", headers=as_hotel,
                                 json={"customerId": hotel_id, "productId": "premium", "generation": 7})
        assert late.status_code == 409 and late.json()["error"] == "customer_closed"
        assert proxy.count(*ASSIGN) == assigns_after
        assert (await client.get(f"/media/storage/{hotel_id}", headers=as_hotel)).status_code == 404
        members = await client.get(f"/members/get/by/hotel_id/{hotel_id}", headers=as_hotel)
        assert members.json()["items"] == []


async def test_retry_route_guards(tmp_path, monkeypatch):
    async with platform_behind_proxy(tmp_path, monkeypatch) as (running, _proxy), running.client() as client:
        operator = await running.service_headers("operator")
        hotel_id = await add_hotel(client, operator)
        await wait_for_status(client, operator, hotel_id, statuses=("ready",))
        not_failed = await client.post(f"/hotel/{hotel_id}/retry", headers=operator)
        assert not_failed.status_code == 409 and not_failed.json()["error"] == "hotel_not_failed"
        unknown = await client.post("/hotel/no-such-hotel/retry", headers=operator)
        assert unknown.status_code == 404 and unknown.json()["error"]
        assert (await client.post("/hotel/" + "x" * 65 + "/retry", headers=operator)).status_code == 422
        assert (await client.post(f"/hotel/{hotel_id}/retry")).status_code == 401
        news = await running.service_headers("news")  # a service without hotel:provision
        assert (await client.post(f"/hotel/{hotel_id}/retry", headers=news)).status_code == 403
        member = await make_admin(running, client, "boss@retry-guards.example.com", hotel_name="Other")
        as_member = await client.post(f"/hotel/{hotel_id}/retry", headers=member.headers)
        assert as_member.status_code == 403 and as_member.json()["error"]


async def test_past_the_retry_limit_the_hotel_is_undone(tmp_path, monkeypatch):
    """Retrying later lasts hours in production (``saga_retry_later_limit_seconds``), not forever."""
    async with platform_behind_proxy(tmp_path, monkeypatch, **{**WAIT_SOON, "saga_retry_later_limit_seconds": 1.0}) \
            as (running, proxy), running.client() as client:
        operator = await running.service_headers("operator")
        proxy.fail(*ASSIGN, status=503)
        hotel_id = await add_hotel(client, operator)
        document = await wait_for_status(client, operator, hotel_id, statuses=("failed",))
        for _ in range(600):  # at most a minute
            if document["status"] == "failed" and document["nextRetryAt"] is None:
                break
            await asyncio.sleep(0.1)
            document = (await client.get(f"/hotel/{hotel_id}/provisioning", headers=operator)).json()
        assert step(document, "subscription")["status"] == "failed"
        assert [s["status"] for s in document["steps"][1:3]] == ["compensated"] * 2
        # Two rounds at least: the first budget, then one more after waiting.
        assert step(document, "subscription")["attempts"] >= 2 * FAST_SAGA["saga_max_attempts"]
