"""``GET /sub/customers/{id}/subscription?refresh=true`` asks Stripe (localstripe, through the SDK)
for the live subscription's state and records it, as the webhook would: a subscription canceled in
Stripe whose webhook never came reads canceled, and the hotel falls back to the free plan's quota."""

from __future__ import annotations

from tests.billing.test_closure import ASSIGN


async def test_refresh_records_a_subscription_canceled_in_stripe_without_its_webhook(stripe_billing):
    # Stripe's events go nowhere: only the refresh can tell billing.
    await stripe_billing.stripe.register_webhook("http://127.0.0.1:9/nowhere")
    headers = await stripe_billing.hotel_headers()
    path = f"/sub/customers/{ASSIGN['customerId']}/subscription"
    async with stripe_billing.running.client() as client:
        created = (await client.post("/sub/assign-subscription/", json=ASSIGN, headers=headers)).json()
        sdk, http = stripe_billing.stripe.client()
        try:
            await sdk.v1.subscriptions.cancel_async(created["id"])
        finally:
            await http.close_async()
        stale = (await client.get(path, headers=headers)).json()
        assert stale["status"] == created["status"] != "canceled"
        fresh = await client.get(path, params={"refresh": "true"}, headers=headers)
        assert fresh.status_code == 200, fresh.text
        assert (fresh.json()["id"], fresh.json()["status"]) == (created["id"], "canceled")
        assert fresh.json()["endedAt"] is not None
        assert (await client.get(path, headers=headers)).json()["status"] == "canceled"
        # Ended: a new assign makes a new subscription (what a hotel's repair does).
        again = await client.post("/sub/assign-subscription/", json=ASSIGN, headers=headers)
        assert again.status_code == 201 and again.json()["id"] != created["id"], again.text
        assert (await client.get(path, params={"refresh": "maybe"}, headers=headers)).status_code == 422


async def test_refresh_on_the_local_provider_keeps_its_own_record(billing):
    headers = await billing.hotel_headers()
    path = f"/sub/customers/{ASSIGN['customerId']}/subscription"
    async with billing.running.client() as client:
        created = (await client.post("/sub/assign-subscription/", json=ASSIGN, headers=headers)).json()
        fresh = (await client.get(path, params={"refresh": "true"}, headers=headers)).json()
        assert (fresh["id"], fresh["status"]) == (created["id"], created["status"])
        missing = await client.get("/sub/customers/nobody/subscription", params={"refresh": "true"}, headers=headers)
        assert missing.status_code == 404
        assert (await client.get(path, params={"refresh": "true"})).status_code == 401
