"""Plans, assigning (idempotent, concurrent), reading, canceling and changing plans, on both providers."""

from __future__ import annotations

import asyncio

from tests.fixtures.events import event_tap


async def test_plans_are_public_and_premium_grants_20000_mo(billing):
    async with billing.running.client() as client:
        response = await client.get("/sub/plans")
    assert response.status_code == 200
    plans = {plan["id"]: plan for plan in response.json()}
    assert set(plans) == {"free", "standard", "premium"}
    assert plans["premium"]["storageQuota"] == {"maxSize": 20000, "unit": "MO"}
    assert plans["free"]["amount"] == 0 and plans["premium"]["amount"] > plans["standard"]["amount"] > 0
    assert all(p["currency"] == "eur" and p["interval"] == "month" for p in plans.values())


async def test_assign_accepts_the_seed_body_and_is_idempotent(billing):
    headers = await billing.hotel_headers()
    async with billing.running.client() as client:
        first = await client.post("/sub/assign-subscription/", json={"customer_id": "hotel-1", "product_id": "premium"},
                                  headers=headers)
        assert first.status_code == 201, first.text
        subscription = first.json()
        assert subscription["customerId"] == "hotel-1"
        assert subscription["productId"] == "premium"
        assert subscription["storageQuota"] == {"maxSize": 20000, "unit": "MO"}
        assert subscription["provider"] == billing.provider
        assert subscription["status"] in ("active", "trialing", "incomplete")
        assert subscription["currentPeriodEnd"]

        again = await client.post("/sub/assign-subscription/", json={"customerId": "hotel-1", "productId": "premium"},
                                  headers=headers)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == subscription["id"]
        # Without the trailing slash too (no redirect for a POST).
        bare = await client.post("/sub/assign-subscription", json={"customerId": "hotel-1", "productId": "premium"},
                                 headers=headers)
        assert bare.status_code == 200 and bare.json()["id"] == subscription["id"]

        got = await client.get("/sub/customers/hotel-1/subscription", headers=headers)
        assert got.status_code == 200 and got.json() == again.json()

        other_plan = await client.post("/sub/assign-subscription/", json={"customerId": "hotel-1", "productId": "free"},
                                       headers=headers)
        assert other_plan.status_code == 409 and other_plan.json()["error"] == "subscription_exists"

    if billing.stripe is not None:
        sdk, http = billing.stripe.client()
        try:
            found = await sdk.v1.subscriptions.retrieve_async(subscription["id"])
            assert found.to_dict()["metadata"]["roomee_hotel_id"] == "hotel-1"
            customers = [c for c in (await sdk.v1.customers.list_async()).data
                         if c.to_dict()["metadata"].get("roomee_hotel_id") == "hotel-1"]
            assert len(customers) == 1
            assert subscription["providerCustomerId"] == customers[0].id
        finally:
            await http.close_async()


async def test_concurrent_assigns_create_one_subscription(billing):
    headers = await billing.hotel_headers()
    async with billing.running.client() as client:
        responses = await asyncio.gather(*(
            client.post("/sub/assign-subscription/", json={"customerId": "hotel-c", "productId": "standard"},
                        headers=headers)
            for _ in range(10)
        ))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    if billing.stripe is not None:
        sdk, http = billing.stripe.client()
        try:
            subscriptions = (await sdk.v1.subscriptions.list_async({"status": "all"})).data
            assert len(subscriptions) == 1
            assert len((await sdk.v1.customers.list_async()).data) == 1
        finally:
            await http.close_async()


async def test_cancel_then_change_plan_and_reassign(billing):
    headers = await billing.hotel_headers()
    async with billing.running.client() as client, event_tap(billing.running, ["roomee.storage.media"]) as tap:
        created = (await client.post("/sub/assign-subscription/", json={"customerId": "h2", "productId": "standard"},
                                     headers=headers)).json()

        changed = await client.post("/sub/customers/h2/change-plan", json={"productId": "premium"}, headers=headers)
        assert changed.status_code == 200, changed.text
        assert changed.json()["id"] == created["id"]
        assert changed.json()["productId"] == "premium"
        assert changed.json()["storageQuota"]["maxSize"] == 20000
        quota = await tap.wait_for("roomee.storage.media", lambda e: e["ecosystemId"] == "h2")
        assert quota["payload"] == {"ecosystemId": "h2", "payload": {"max_size": 20000, "unit": "MO"}}
        same = await client.post("/sub/customers/h2/change-plan", json={"product_id": "premium"}, headers=headers)
        assert same.status_code == 200 and same.json()["updatedAt"] == changed.json()["updatedAt"]

        canceled = await client.post("/sub/customers/h2/cancel", headers=headers)
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled" and canceled.json()["endedAt"]
        twice = await client.post("/sub/customers/h2/cancel", headers=headers)
        assert twice.status_code == 200 and twice.json()["id"] == created["id"] and twice.json()["status"] == "canceled"
        assert (await client.get("/sub/customers/h2/subscription", headers=headers)).json()["status"] == "canceled"
        ended = await client.post("/sub/customers/h2/change-plan", json={"productId": "free"}, headers=headers)
        assert ended.status_code == 409 and ended.json()["error"] == "subscription_ended"

        # A canceled hotel may subscribe again: a new subscription, the same provider customer.
        renewed = await client.post("/sub/assign-subscription/", json={"customerId": "h2", "productId": "free"},
                                    headers=headers)
        assert renewed.status_code == 201, renewed.text
        assert renewed.json()["id"] != created["id"]
        assert renewed.json()["providerCustomerId"] == created["providerCustomerId"]
        assert renewed.json()["status"] == "active"

    if billing.stripe is not None:
        sdk, http = billing.stripe.client()
        try:
            old = (await sdk.v1.subscriptions.retrieve_async(created["id"])).to_dict()
            assert old["status"] == "canceled"
            live = (await sdk.v1.subscriptions.list_async()).data
            assert [s.id for s in live] == [renewed.json()["id"]]
        finally:
            await http.close_async()


async def test_unknown_hotel_and_bad_input(billing):
    headers = await billing.hotel_headers()
    async with billing.running.client() as client:
        for method, path in [("GET", "/sub/customers/nobody/subscription"), ("POST", "/sub/customers/nobody/cancel")]:
            response = await client.request(method, path, headers=headers)
            assert response.status_code == 404 and response.json()["error"] == "subscription_not_found", path
        missing = await client.post("/sub/customers/nobody/change-plan", json={"productId": "free"}, headers=headers)
        assert missing.status_code == 404

        bad_bodies = [
            {},
            {"customerId": "h"},
            {"productId": "free"},
            {"customerId": "", "productId": "free"},
            {"customerId": "a/b", "productId": "free"},
            {"customerId": "x" * 65, "productId": "free"},
            {"customerId": "h", "productId": "free", "email": "not-an-email"},
            {"customerId": 12, "productId": "free"},
        ]
        for body in bad_bodies:
            response = await client.post("/sub/assign-subscription/", json=body, headers=headers)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["error"] == "validation_error"
        unknown = await client.post("/sub/assign-subscription/", json={"customerId": "h", "productId": "gold"},
                                    headers=headers)
        assert unknown.status_code == 422 and unknown.json()["error"] == "unknown_plan"
        assert "premium" in unknown.json()["detail"]
        not_json = await client.post("/sub/assign-subscription/", content=b"{", headers=headers | {"content-type": "application/json"})
        assert not_json.status_code == 400 and not_json.json()["error"] == "invalid_json"  # the kit's malformed-JSON answer
        # Nothing was created by any of these.
        assert (await client.get("/sub/customers/h/subscription", headers=headers)).status_code == 404


async def test_concurrent_plan_changes_and_cancels(billing):
    headers = await billing.hotel_headers()
    async with billing.running.client() as client, event_tap(billing.running, ["roomee.storage.media"]) as tap:
        created = await client.post("/sub/assign-subscription/", json={"customerId": "h-cc", "productId": "free"},
                                    headers=headers)
        assert created.status_code == 201
        changes = await asyncio.gather(*(
            client.post("/sub/customers/h-cc/change-plan", json={"productId": "premium"}, headers=headers)
            for _ in range(6)
        ))
        assert [c.status_code for c in changes] == [200] * 6, [c.text for c in changes]
        assert {c.json()["productId"] for c in changes} == {"premium"}
        await tap.wait_for("roomee.storage.media")
        await asyncio.sleep(0.5)
        assert len(tap.of("roomee.storage.media")) == 1  # one change, one quota event

        cancels = await asyncio.gather(*(client.post("/sub/customers/h-cc/cancel", headers=headers) for _ in range(6)))
        assert [c.status_code for c in cancels] == [200] * 6, [c.text for c in cancels]
        assert {c.json()["status"] for c in cancels} == {"canceled"}
        assert len({c.json()["endedAt"] for c in cancels}) == 1


async def test_openapi_lists_every_billing_route_and_its_errors(billing):
    async with billing.running.client() as client:
        document = (await client.get("/openapi/billing.json")).json()
    paths = document["paths"]
    assert set(paths) == {"/sub/plans", "/sub/assign-subscription/", "/sub/customers/{customer_id}/subscription",
                          "/sub/customers/{customer_id}/cancel", "/sub/customers/{customer_id}/change-plan",
                          "/sub/subscription", "/sub/webhook", "/sub/customers/{customer_id}"}
    assert {"401", "403", "409", "422", "503"} <= set(paths["/sub/assign-subscription/"]["post"]["responses"])
    assert {"401", "403", "422", "502", "503"} <= set(paths["/sub/customers/{customer_id}"]["delete"]["responses"])
    assert "400" in paths["/sub/webhook"]["post"]["responses"]
