"""The saga leaves no provider data behind (billing on Stripe, i.e. localstripe through the SDK): an
undone hotel and a deleted hotel have 0 Stripe customers and no live subscription, and a subscription
request that reaches billing after the undo (slower than the client's timeout) creates nothing."""

from __future__ import annotations

import asyncio

from tests.billing.test_closure import stripe_leftovers
from tests.fixtures.stripe import WEBHOOK_SECRET, localstripe  # noqa: F401 (fixture)
from tests.hotel.support import add_hotel, hotel_body, platform_behind_proxy, step, wait_for_status

ASSIGN = ("POST", "/sub/assign-subscription/")
ADD_ADMIN = ("POST", "/members/add/hotel/member")


def on_stripe(local_stripe, **overrides) -> dict:
    return {"billing_provider": "stripe", "stripe_api_key": local_stripe.api_key, "stripe_api_url": local_stripe.url,
            "stripe_webhook_secret": WEBHOOK_SECRET, **overrides}


async def customers_and_live(local_stripe, hotel_id: str, email: str) -> tuple[list[dict], list[dict]]:
    customers, live = await stripe_leftovers(local_stripe, hotel_id)
    sdk, http = local_stripe.client()
    try:  # a customer wiped of its hotel id but still carrying the hotel's contact would count too
        by_email = [c.to_dict() for c in (await sdk.v1.customers.list_async({"limit": 100})).data
                    if c.to_dict().get("email") == email]
    finally:
        await http.close_async()
    return customers + [c for c in by_email if c["id"] not in {k["id"] for k in customers}], live


async def test_an_undone_and_a_deleted_hotel_leave_no_stripe_customer(tmp_path, monkeypatch, localstripe):
    await localstripe.reset()
    async with platform_behind_proxy(tmp_path, monkeypatch, **on_stripe(localstripe)) as (running, proxy), \
            running.client() as client:
        operator = await running.service_headers("operator")
        body = hotel_body(email="contact@undone.example.com")

        # Undone: the admin step fails for good after the subscription (and its customer) was made.
        proxy.fail(*ADD_ADMIN, status=409, times=1)
        undone = await add_hotel(client, operator, body)
        failed = await wait_for_status(client, operator, undone)
        assert failed["status"] == "failed" and step(failed, "subscription")["status"] == "compensated", failed
        assert await customers_and_live(localstripe, undone, body["email"]) == ([], [])

        # Deleted: a ready hotel has its customer and a live subscription, then nothing.
        kept = hotel_body(email="contact@deleted.example.com")
        hotel_id = await add_hotel(client, operator, kept)
        ready = await wait_for_status(client, operator, hotel_id)
        assert ready["status"] == "ready", ready
        customers, live = await customers_and_live(localstripe, hotel_id, kept["email"])
        assert len(customers) == 1 and [s["id"] for s in live] == [ready["subscriptionId"]]
        assert (await client.delete(f"/hotel/{hotel_id}", headers=operator)).status_code == 202
        await wait_for_status(client, operator, hotel_id, statuses=("deleted",))
        assert await customers_and_live(localstripe, hotel_id, kept["email"]) == ([], [])


async def test_a_subscription_request_arriving_after_the_undo_creates_nothing(tmp_path, monkeypatch, localstripe):
    """Every assign is held on its way to billing past the saga's 1 s timeout: the step fails, the
    saga undoes the hotel, and only then do the held requests reach billing, which refuses them."""
    await localstripe.reset()
    overrides = on_stripe(localstripe, http_timeout_ms=1000)
    async with platform_behind_proxy(tmp_path, monkeypatch, **overrides) as (running, proxy), \
            running.client() as client:
        operator = await running.service_headers("operator")
        as_hotel = await running.service_headers("hotel")
        held = proxy.hold(*ASSIGN, times=None)
        body = hotel_body(email="contact@late.example.com")
        hotel_id = await add_hotel(client, operator, body)
        failed = await wait_for_status(client, operator, hotel_id)
        assert failed["status"] == "failed" and step(failed, "subscription")["status"] == "failed", failed
        assert held.hits >= 1 and proxy.count(*ASSIGN) == 0  # none has reached billing yet
        proxy.release(held)
        for _ in range(300):  # the proxy logs a request once billing answered it
            if proxy.count(*ASSIGN) == held.hits:
                break
            await asyncio.sleep(0.1)
        answers = [status for method, path, status in proxy.log if (method, path) == ASSIGN]
        assert answers == [409] * held.hits, answers  # customer_closed
        subscription = await client.get(f"/sub/customers/{hotel_id}/subscription", headers=as_hotel)
        assert subscription.status_code == 404, subscription.text
        assert await customers_and_live(localstripe, hotel_id, body["email"]) == ([], [])
