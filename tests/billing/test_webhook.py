"""POST /sub/webhook: verified with the signing secret, handled once per event id, changes emitted."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta

import stripe

from tests.fixtures.events import event_tap
from tests.fixtures.stripe import WEBHOOK_SECRET

BILLING_EVENTS = ["roomee.notification.hotel.updated", "roomee.storage.media"]


def subscription_event(subscription: dict, *, event_type: str = "customer.subscription.updated", status: str | None = None,
                       plan: str | None = None, created: int | None = None, event_id: str | None = None) -> bytes:
    """A Stripe event about one of our subscriptions, shaped as Stripe sends it."""
    period_end = int(time.time()) + 30 * 86400
    stripe_plan = {"id": f"roomee-{plan or subscription['productId']}-monthly", "object": "plan"}
    body = {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": event_type,
        "created": created or int(time.time()) + 1,
        "data": {"object": {
            "id": subscription["id"],
            "object": "subscription",
            "customer": subscription["providerCustomerId"],
            "status": status or subscription["status"],
            "current_period_end": period_end,
            "items": {"object": "list", "data": [{"id": "si_test", "object": "subscription_item", "plan": stripe_plan}]},
        }},
    }
    return json.dumps(body).encode()


def signed(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, timestamp)
    return {"Stripe-Signature": header, "content-type": "application/json"}


async def _subscribe(client, headers, hotel: str, plan: str = "standard") -> dict:
    response = await client.post("/sub/assign-subscription/", json={"customerId": hotel, "productId": plan}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_bad_signatures_are_refused_and_change_nothing(billing):
    headers = await billing.hotel_headers()
    async with billing.running.client() as client, event_tap(billing.running, BILLING_EVENTS) as tap:
        subscription = await _subscribe(client, headers, "hotel-w1")
        payload = subscription_event(subscription, status="past_due")
        attempts = [
            {"content-type": "application/json"},  # no signature at all
            signed(payload, secret="whsec_someone_else"),
            signed(payload, timestamp=int(time.time()) - 3600),  # replayed an hour later
            {"Stripe-Signature": "t=1,v1=deadbeef", "content-type": "application/json"},
            {"Stripe-Signature": "garbage", "content-type": "application/json"},
        ]
        for attempt in attempts:
            response = await client.post("/sub/webhook", content=payload, headers=attempt)
            assert response.status_code == 400, response.text
            assert response.json()["error"] == "invalid_signature"
        tampered = payload.replace(b"past_due", b"canceled")
        response = await client.post("/sub/webhook", content=tampered, headers=signed(payload))
        assert response.status_code == 400 and response.json()["error"] == "invalid_signature"
        not_json = b"not json"
        response = await client.post("/sub/webhook", content=not_json, headers=signed(not_json))
        assert response.status_code == 400 and response.json()["error"] == "invalid_payload"

        current = (await client.get("/sub/customers/hotel-w1/subscription", headers=headers)).json()
        assert current["status"] == subscription["status"] and current["updatedAt"] == subscription["updatedAt"]
        # The refused event id was not remembered: signed properly, it is applied.
        accepted = await client.post("/sub/webhook", content=payload, headers=signed(payload))
        assert accepted.status_code == 200 and accepted.json() == {"received": True, "duplicate": False, "outcome": "applied"}
        await tap.wait_for("roomee.notification.hotel.updated")
        assert len(tap.of("roomee.notification.hotel.updated")) == 1


async def test_the_same_event_is_handled_once_even_concurrently(billing):
    headers = await billing.hotel_headers()
    async with billing.running.client() as client, event_tap(billing.running, BILLING_EVENTS) as tap:
        subscription = await _subscribe(client, headers, "hotel-w2")
        payload = subscription_event(subscription, status="past_due")
        first = await client.post("/sub/webhook", content=payload, headers=signed(payload))
        assert first.json() == {"received": True, "duplicate": False, "outcome": "applied"}
        duplicates_before = await billing.metric("billing_webhook_events_total", type="customer.subscription.updated",
                                                 outcome="duplicate")
        again = await client.post("/sub/webhook", content=payload, headers=signed(payload))
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert await billing.metric("billing_webhook_events_total", type="customer.subscription.updated",
                                    outcome="duplicate") == duplicates_before + 1

        event = await tap.wait_for("roomee.notification.hotel.updated")
        assert event["ecosystemId"] == "hotel-w2" and event["workspaceId"] is None
        assert event["payload"]["change"] == "status"
        assert event["payload"]["subscription"]["status"] == "past_due"
        assert event["payload"]["previous"]["status"] == subscription["status"]
        assert (await client.get("/sub/customers/hotel-w2/subscription", headers=headers)).json()["status"] == "past_due"

        # Ten deliveries of one new event at once: one applies it.
        recovered = subscription_event(subscription, status="active", created=int(time.time()) + 2)
        answers = await asyncio.gather(*(client.post("/sub/webhook", content=recovered, headers=signed(recovered))
                                         for _ in range(10)))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 9
        await tap.wait_for("roomee.notification.hotel.updated", lambda e: e["payload"]["subscription"]["status"] == "active")
        await asyncio.sleep(0.5)  # let any wrongly repeated event arrive
        assert len(tap.of("roomee.notification.hotel.updated")) == 2
        # A status change keeps the quota: no storage event.
        assert tap.of("roomee.storage.media") == []


async def test_plan_change_and_end_emit_the_new_quota_and_late_events_are_stale(billing):
    headers = await billing.hotel_headers()
    async with billing.running.client() as client, event_tap(billing.running, BILLING_EVENTS) as tap:
        subscription = await _subscribe(client, headers, "hotel-w3", "standard")
        upgraded = subscription_event(subscription, plan="premium", created=int(time.time()) + 5)
        assert (await client.post("/sub/webhook", content=upgraded, headers=signed(upgraded))).json()["outcome"] == "applied"
        quota = await tap.wait_for("roomee.storage.media")
        assert quota["ecosystemId"] == "hotel-w3"
        assert quota["payload"] == {"ecosystemId": "hotel-w3", "payload": {"max_size": 20000, "unit": "MO"}}
        updated = await tap.wait_for("roomee.notification.hotel.updated")
        assert updated["payload"]["change"] == "plan" and updated["payload"]["subscription"]["productId"] == "premium"
        assert updated["payload"]["subscription"]["storageQuota"] == {"maxSize": 20000, "unit": "MO"}
        got = (await client.get("/sub/customers/hotel-w3/subscription", headers=headers)).json()
        assert got["productId"] == "premium" and got["storageQuota"]["maxSize"] == 20000

        # An older event delivered late does not undo the newer state.
        late = subscription_event(subscription, plan="standard", status="past_due", created=int(time.time()) + 1)
        assert (await client.post("/sub/webhook", content=late, headers=signed(late))).json()["outcome"] == "stale"
        assert (await client.get("/sub/customers/hotel-w3/subscription", headers=headers)).json()["productId"] == "premium"

        if billing.stripe is not None:  # the event reports what happened in Stripe
            sdk, http = billing.stripe.client()
            try:
                await sdk.v1.subscriptions.cancel_async(subscription["id"])
            finally:
                await http.close_async()
        ended = subscription_event(subscription, event_type="customer.subscription.deleted", plan="premium",
                                   status="canceled", created=int(time.time()) + 6)
        assert (await client.post("/sub/webhook", content=ended, headers=signed(ended))).json()["outcome"] == "applied"
        await tap.wait_for("roomee.storage.media", lambda e: e["payload"]["payload"]["max_size"] == 1000)
        canceled = (await client.get("/sub/customers/hotel-w3/subscription", headers=headers)).json()
        assert canceled["status"] == "canceled" and canceled["endedAt"]
        # The hotel may subscribe again once its subscription ended.
        assert (await client.post("/sub/assign-subscription/", json={"customerId": "hotel-w3", "productId": "free"},
                                  headers=headers)).status_code == 201

        other = subscription_event({**subscription, "id": "sub_not_ours"}, status="past_due")
        assert (await client.post("/sub/webhook", content=other, headers=signed(other))).json()["outcome"] == "unknown_subscription"
        unrelated = json.dumps({"id": "evt_other", "object": "event", "type": "invoice.paid", "created": 1,
                                "data": {"object": {"id": "in_1"}}}).encode()
        assert (await client.post("/sub/webhook", content=unrelated, headers=signed(unrelated))).json()["outcome"] == "ignored"


async def test_webhooks_are_refused_without_a_signing_secret(tmp_path):
    from tests.fixtures.platform import make_settings, running_platform

    async with running_platform(make_settings(tmp_path), "auth,members,billing") as running, running.client() as client:
        payload = b'{"id": "evt_1"}'
        response = await client.post("/sub/webhook", content=payload, headers=signed(payload))
    assert response.status_code == 503 and response.json()["error"] == "webhook_not_configured"


async def test_a_cancel_made_in_stripe_arrives_through_its_own_webhook(stripe_billing):
    """A subscription canceled in Stripe itself (the dashboard, dunning): localstripe signs and delivers
    the real `customer.subscription.deleted` (it sends no `.updated`), billing stores and emits it."""
    headers = await stripe_billing.hotel_headers()
    sdk, http = stripe_billing.stripe.client()
    try:
        async with stripe_billing.running.client() as client, event_tap(stripe_billing.running, BILLING_EVENTS) as tap:
            subscription = await _subscribe(client, headers, "hotel-s1", "premium")
            await asyncio.sleep(1.1)  # Stripe's `created` has a one-second grain: cancel in a later second
            await sdk.v1.subscriptions.cancel_async(subscription["id"])
            updated = await tap.wait_for("roomee.notification.hotel.updated", timeout=15)
            assert updated["ecosystemId"] == "hotel-s1"
            assert updated["payload"]["change"] == "status"
            assert updated["payload"]["subscription"]["status"] == "canceled"
            quota = await tap.wait_for("roomee.storage.media")
            assert quota["payload"] == {"ecosystemId": "hotel-s1", "payload": {"max_size": 1000, "unit": "MO"}}
            got = (await client.get("/sub/customers/hotel-s1/subscription", headers=headers)).json()
            assert got["status"] == "canceled" and got["endedAt"]
            # Canceling through billing afterwards is a no-op that answers the same.
            again = await client.post("/sub/customers/hotel-s1/cancel", headers=headers)
            assert again.status_code == 200 and again.json()["status"] == "canceled"
    finally:
        await http.close_async()


async def test_old_event_ids_are_forgotten_after_the_retention(billing):
    import sqlalchemy as sa

    from roomee.billing.models import webhook_event
    from roomee.billing.service import WEBHOOK_EVENT_RETENTION, purge_webhook_events
    from roomee.kit.clock import utcnow

    headers = await billing.hotel_headers()
    ctx = billing.running.platform.services["billing"]
    async with billing.running.client() as client:
        subscription = await _subscribe(client, headers, "hotel-old")
        old, recent = subscription_event(subscription, status="past_due"), subscription_event(subscription, status="active")
        for payload in (old, recent):
            assert (await client.post("/sub/webhook", content=payload, headers=signed(payload))).status_code == 200
    old_id = json.loads(old)["id"]
    async with ctx.db.transaction() as session:
        await session.execute(sa.update(webhook_event).where(webhook_event.c.id == old_id)
                              .values(received_at=utcnow() - WEBHOOK_EVENT_RETENTION - timedelta(minutes=1)))
    assert await purge_webhook_events(ctx) == 1
    async with ctx.db.transaction() as session:
        remaining = (await session.execute(sa.select(webhook_event.c.id))).scalars().all()
    assert old_id not in remaining and json.loads(recent)["id"] in remaining
