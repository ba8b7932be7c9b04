"""Closing a hotel in billing (``DELETE /sub/customers/{id}``): the live subscription is canceled, the
Stripe customer deleted, the contact details forgotten, and a late assign of a closed generation is
refused (409 ``customer_closed``) whatever the order in which the two requests arrive."""

from __future__ import annotations

import asyncio

from tests.billing.test_faults import Fault, billing_behind_faults, faulty  # noqa: F401 (fixtures)

ASSIGN = {"customerId": "hotel-c", "productId": "premium", "email": "billing@hotel-c.example.com",
          "name": "Hôtel C"}


async def stripe_leftovers(local_stripe, hotel_id: str) -> tuple[list[dict], list[dict]]:
    """The hotel's Stripe customers and its subscriptions that are not ended, read through the SDK."""
    sdk, http = local_stripe.client()
    try:
        customers = [c.to_dict() for c in (await sdk.v1.customers.list_async({"limit": 100})).data]
        subscriptions = [s.to_dict() for s in (await sdk.v1.subscriptions.list_async({"status": "all", "limit": 100})).data]
    finally:
        await http.close_async()
    return (
        [c for c in customers if (c.get("metadata") or {}).get("roomee_hotel_id") == hotel_id
         or c.get("email") == ASSIGN["email"]],
        [s for s in subscriptions if (s.get("metadata") or {}).get("roomee_hotel_id") == hotel_id
         and s["status"] not in ("canceled", "incomplete_expired")],
    )


async def test_closing_cancels_deletes_the_customer_and_refuses_late_assigns(billing):
    headers = await billing.hotel_headers()
    async with billing.running.client() as client:
        created = await client.post("/sub/assign-subscription/", json=ASSIGN, headers=headers)
        assert created.status_code == 201, created.text

        closed = await client.delete("/sub/customers/hotel-c", params={"generation": 0}, headers=headers)
        assert closed.status_code == 200, closed.text
        body = closed.json()
        assert body["canceledSubscriptionId"] == created.json()["id"]
        assert body["closedGeneration"] == 0 and body["closedForGood"] is False
        assert body["providerCustomersDeleted"] == (1 if billing.stripe else 0)
        got = (await client.get("/sub/customers/hotel-c/subscription", headers=headers)).json()
        assert got["status"] == "canceled"

        # Idempotent: closing again changes nothing and deletes nothing more.
        again = await client.delete("/sub/customers/hotel-c", params={"generation": 0}, headers=headers)
        assert again.status_code == 200 and again.json()["canceledSubscriptionId"] is None

        late = await client.post("/sub/assign-subscription/", json=ASSIGN, headers=headers)
        assert late.status_code == 409 and late.json()["error"] == "customer_closed", late.text
        if billing.stripe is not None:
            assert await stripe_leftovers(billing.stripe, "hotel-c") == ([], [])

        # A retried provisioning (the next generation) subscribes again, with a new customer.
        retried = await client.post("/sub/assign-subscription/", json={**ASSIGN, "generation": 1}, headers=headers)
        assert retried.status_code == 201, retried.text
        assert retried.json()["id"] != created.json()["id"]

        # Closed for good (the hotel is deleted): no generation is accepted any more.
        gone = await client.delete("/sub/customers/hotel-c", headers=headers)
        assert gone.status_code == 200 and gone.json()["closedForGood"] is True
        for generation in (1, 2, 50):
            refused = await client.post("/sub/assign-subscription/", json={**ASSIGN, "generation": generation},
                                        headers=headers)
            assert refused.status_code == 409 and refused.json()["error"] == "customer_closed"
    assert await billing.metric("billing_subscriptions_total", operation="assign", outcome="refused_closed") >= 4
    if billing.stripe is not None:
        assert await stripe_leftovers(billing.stripe, "hotel-c") == ([], [])


async def test_a_close_before_the_assign_arrives_leaves_nothing(billing):
    """The saga's undo reached billing first (the assign was slower than the client's timeout)."""
    headers = await billing.hotel_headers()
    async with billing.running.client() as client:
        closed = await client.delete("/sub/customers/hotel-c", params={"generation": 0}, headers=headers)
        assert closed.status_code == 200, closed.text
        assert closed.json()["canceledSubscriptionId"] is None
        late = await client.post("/sub/assign-subscription/", json=ASSIGN, headers=headers)
        assert late.status_code == 409 and late.json()["error"] == "customer_closed"
        assert (await client.get("/sub/customers/hotel-c/subscription", headers=headers)).status_code == 404
    if billing.stripe is not None:
        assert await stripe_leftovers(billing.stripe, "hotel-c") == ([], [])


async def test_a_close_during_an_assign_in_flight_leaves_nothing(billing_behind_faults, faulty):
    """The assign is at Stripe (held there) when the close arrives: the close waits for it and then
    cancels what it created; nothing live is left in localstripe."""
    billing = billing_behind_faults
    headers = await billing.hotel_headers()
    async with billing.running.client() as client:
        assert (await client.get("/sub/plans")).status_code == 200
        hold = Fault("POST", "/v1/subscriptions", "hold")
        faulty.faults.append(hold)
        assign = asyncio.create_task(client.post("/sub/assign-subscription/", json=ASSIGN, headers=headers))
        await asyncio.wait_for(hold.reached.wait(), 30)
        close = asyncio.create_task(client.delete("/sub/customers/hotel-c", params={"generation": 0}, headers=headers))
        await asyncio.sleep(0.3)  # the close is queued behind the assign (either order must leave nothing)
        hold.gate.set()
        assigned, closed = await assign, await close
        assert assigned.status_code == 201, assigned.text
        assert closed.status_code == 200, closed.text
        assert closed.json()["canceledSubscriptionId"] == assigned.json()["id"]
        assert closed.json()["providerCustomersDeleted"] == 1
        late = await client.post("/sub/assign-subscription/", json=ASSIGN, headers=headers)
        assert late.status_code == 409
    assert await stripe_leftovers(billing.stripe, "hotel-c") == ([], [])


async def test_close_needs_the_billing_scope_and_a_valid_id(billing):
    async with billing.running.client() as client:
        assert (await client.delete("/sub/customers/hotel-c")).status_code == 401
        as_members = await billing.running.service_headers("members")
        assert (await client.delete("/sub/customers/hotel-c", headers=as_members)).status_code == 403
        headers = await billing.hotel_headers()
        bad_id = await client.delete("/sub/customers/" + "x" * 65, headers=headers)
        assert bad_id.status_code == 422
        bad_generation = await client.delete("/sub/customers/hotel-c", params={"generation": -1}, headers=headers)
        assert bad_generation.status_code == 422 and bad_generation.json()["error"] == "validation_error"
