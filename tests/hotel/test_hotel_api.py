"""The hotel target over real HTTP: provisioning happy path, Idempotency-Key, reads, updates,
deletion, validation and permissions on every route."""

from __future__ import annotations

import asyncio
import io

import zxingcpp
from PIL import Image

from tests.fixtures.events import event_tap
from tests.fixtures.people import make_admin
from tests.hotel.support import sign_up_admin
from tests.hotel.support import STEPS, add_hotel, hotel_body, wait_for_status


async def test_add_hotel_provisions_every_step(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        operator = await platform.service_headers("operator")
        body = hotel_body(plan="premium")
        response = await client.post("/hotel/add", json=body, headers=operator)
        assert response.status_code == 202, response.text
        accepted = response.json()
        hotel_id = accepted["id"]
        assert accepted == {"id": hotel_id, "name": body["name"], "status": "provisioning", "plan": "premium",
                            "qrLink": None, "links": {"provisioning": f"/hotel/{hotel_id}/provisioning"}}
        assert response.headers["location"] == f"/hotel/{hotel_id}/provisioning"

        document = await wait_for_status(client, operator, hotel_id)
        assert document["status"] == "ready", document
        assert [s["name"] for s in document["steps"]] == STEPS
        assert all(s["status"] == "succeeded" and s["attempts"] == 1 and s["finishedAt"] for s in document["steps"])

        hotel = (await client.get(f"/hotel/{hotel_id}", headers=operator)).json()
        assert hotel["status"] == "ready" and hotel["plan"] == "premium" and hotel["email"] == body["email"]
        assert hotel["qrLink"] == document["qrLink"] and hotel["subscriptionId"] == document["subscriptionId"]

        # The QR code is a public PNG of the hotel's join link.
        png = await client.get(hotel["qrLink"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        [code] = zxingcpp.read_barcodes(Image.open(io.BytesIO(png.content)))
        assert code.text == f"{platform.url}/join/{hotel_id}"

        as_hotel = await platform.service_headers("hotel")
        storage = (await client.get(f"/media/storage/{hotel_id}", headers=as_hotel)).json()
        assert (storage["maxSize"], storage["unit"]) == (20000, "MO")
        subscription = (await client.get(f"/sub/customers/{hotel_id}/subscription", headers=as_hotel)).json()
        assert subscription["id"] == hotel["subscriptionId"] and subscription["productId"] == "premium"
        members = (await client.get(f"/members/get/by/hotel_id/{hotel_id}", headers=as_hotel)).json()["items"]
        assert [(m["id"], m["email"], m["isAdmin"], m["dashboardAccess"]) for m in members] == [
            (hotel["adminMemberId"], body["administrator"]["email"], True, True)
        ]

        quota_event = await tap.wait_for("roomee.storage.media", lambda e: e["ecosystemId"] == hotel_id)
        assert quota_event["payload"] == {"max_size": 20000, "unit": "MO"}
        created = await tap.wait_for("roomee.notification.hotel.created", lambda e: e["ecosystemId"] == hotel_id)
        assert created["metadata"]["receiverIds"] == [hotel["adminMemberId"]]
        assert created["workspaceId"] == members[0]["workspaceId"]
        assert created["payload"]["hotel"]["qrLink"] == hotel["qrLink"]
        assert len(tap.of("roomee.storage.media")) == 1

        metrics = (await client.get("/metrics")).text
        for step in STEPS[1:]:
            assert f'saga_steps_total{{outcome="succeeded",saga="hotel-provisioning",step="{step}"}}' in metrics
            assert f'saga_step_duration_seconds_count{{outcome="succeeded",saga="hotel-provisioning",step="{step}"}}' in metrics
        assert 'sagas_in_flight{saga="hotel-provisioning"}' in metrics


async def test_same_idempotency_key_concurrently_makes_one_hotel(platform):
    async with platform.client() as client:
        operator = await platform.service_headers("operator")
        body = hotel_body()
        headers = {**operator, "Idempotency-Key": "create-lac-1"}
        responses = await asyncio.gather(*(client.post("/hotel/add", json=body, headers=headers) for _ in range(10)))
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {202, 409}, [r.text for r in responses]
        ids = {r.json()["id"] for r in responses if r.status_code == 202}
        assert len(ids) == 1
        for conflict in (r for r in responses if r.status_code == 409):
            assert conflict.json()["error"] == "idempotency_key_in_flight" and conflict.headers["retry-after"]
        [hotel_id] = ids

        again = await client.post("/hotel/add", json=body, headers=headers)
        assert again.status_code == 202 and again.json()["id"] == hotel_id
        assert again.headers["idempotent-replayed"] == "true"
        other = await client.post("/hotel/add", json={**body, "name": "Another"}, headers=headers)
        assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"

        listed = (await client.get("/hotel", headers=operator, params={"limit": 200})).json()["items"]
        assert [h["id"] for h in listed] == [hotel_id]
        # Another client's key is its own: the same key from another principal is a new request.
        await wait_for_status(client, operator, hotel_id)
        fresh = await client.post("/hotel/add", json=body, headers=operator)
        assert fresh.status_code == 202 and fresh.json()["id"] != hotel_id


async def test_list_is_paginated_and_filtered(platform):
    async with platform.client() as client:
        operator = await platform.service_headers("operator")
        ids = [await add_hotel(client, operator, hotel_body(name=f"Hotel {n}")) for n in range(3)]
        for hotel_id in ids:
            await wait_for_status(client, operator, hotel_id)
        first = (await client.get("/hotel", params={"limit": 2}, headers=operator)).json()
        second = (await client.get("/hotel", params={"limit": 2, "cursor": first["nextCursor"]}, headers=operator)).json()
        assert [h["id"] for h in first["items"] + second["items"]] == ids and second["nextCursor"] is None
        ready = (await client.get("/hotel", params={"status": "ready"}, headers=operator)).json()["items"]
        assert len(ready) == 3
        assert (await client.get("/hotel", params={"status": "failed"}, headers=operator)).json()["items"] == []
        forged = await client.get("/hotel", params={"cursor": "bm90LWEtY3Vyc29y"}, headers=operator)
        assert forged.status_code == 422 and forged.json()["error"] == "invalid_cursor"


async def test_update_contact_and_plan(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        operator = await platform.service_headers("operator")
        hotel_id = await add_hotel(client, operator, hotel_body(plan="premium"))
        await wait_for_status(client, operator, hotel_id)

        renamed = await client.patch(f"/hotel/{hotel_id}", json={"name": "Lac Palace", "phone": "+33 1 00"},
                                     headers=operator)
        assert renamed.status_code == 200 and renamed.json()["name"] == "Lac Palace"

        changed = await client.patch(f"/hotel/{hotel_id}", json={"plan": "standard"}, headers=operator)
        assert changed.status_code == 200, changed.text
        assert changed.json()["plan"] == "standard"
        as_hotel = await platform.service_headers("hotel")
        subscription = (await client.get(f"/sub/customers/{hotel_id}/subscription", headers=as_hotel)).json()
        assert subscription["productId"] == "standard"
        plans = {p["id"]: p for p in (await client.get("/sub/plans")).json()}
        standard_quota = plans["standard"]["storageQuota"]["maxSize"]
        for _ in range(100):
            storage = (await client.get(f"/media/storage/{hotel_id}", headers=as_hotel)).json()
            if storage["maxSize"] == standard_quota:
                break
            await asyncio.sleep(0.05)
        assert storage["maxSize"] == standard_quota
        updated = await tap.wait_for("roomee.notification.hotel.updated",
                                     lambda e: e["payload"]["changes"] == ["plan"])
        assert updated["payload"]["hotel"]["plan"] == "standard"

        for bad in ({}, {"plan": "platinum"}, {"name": ""}, {"email": "not-an-email"}, {"name": None}):
            response = await client.patch(f"/hotel/{hotel_id}", json=bad, headers=operator)
            assert response.status_code == 422, (bad, response.text)


async def test_delete_runs_the_deletion_flow(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        operator = await platform.service_headers("operator")
        hotel_id = await add_hotel(client, operator)
        document = await wait_for_status(client, operator, hotel_id)
        qr_media_id = next(s["externalId"] for s in document["steps"] if s["name"] == "qr")

        response = await client.delete(f"/hotel/{hotel_id}", headers=operator)
        assert response.status_code == 202 and response.json()["status"] == "deleting"
        await wait_for_status(client, operator, hotel_id, statuses=("deleted",))
        assert (await client.get(f"/hotel/{hotel_id}", headers=operator)).status_code == 404
        assert (await client.delete(f"/hotel/{hotel_id}", headers=operator)).status_code == 404

        as_hotel = await platform.service_headers("hotel")
        members = (await client.get(f"/members/get/by/hotel_id/{hotel_id}", headers=as_hotel)).json()["items"]
        assert members == []
        subscription = await client.get(f"/sub/customers/{hotel_id}/subscription", headers=as_hotel)
        assert subscription.status_code == 404 or subscription.json()["status"] == "canceled"
        assert (await client.get(f"/media/storage/{hotel_id}", headers=as_hotel)).status_code == 404
        media = await client.get(f"/media/{qr_media_id}", headers=as_hotel)
        assert media.status_code == 404, media.text
        deleted = await tap.wait_for("roomee.notification.hotel.deleted", lambda e: e["ecosystemId"] == hotel_id)
        assert deleted["metadata"]["receiverIds"] == [document["adminMemberId"]]


async def test_validation_errors(platform):
    async with platform.client() as client:
        operator = await platform.service_headers("operator")
        body = hotel_body()
        cases = [
            {**body, "plan": "platinum"},
            {**body, "email": "nope"},
            {**body, "name": ""},
            {**body, "phone": "call me"},
            {k: v for k, v in body.items() if k != "administrator"},
            {**body, "administrator": {"email": "a@b.example.com"}},
            {**body, "administrator": {**body["administrator"], "locale": "french"}},
        ]
        for case in cases:
            response = await client.post("/hotel/add", json=case, headers=operator)
            assert response.status_code == 422 and response.json()["error"] == "validation_error", response.text
        too_long = await client.post("/hotel/add", json=body, headers={**operator, "Idempotency-Key": "k" * 256})
        assert too_long.status_code == 422
        assert (await client.get("/hotel/unknown", headers=operator)).status_code == 404
        assert (await client.get("/hotel/unknown/provisioning", headers=operator)).status_code == 404
        assert (await client.patch("/hotel/unknown", json={"name": "x"}, headers=operator)).status_code == 404
        assert (await client.delete("/hotel/unknown", headers=operator)).status_code == 404
        assert (await client.get("/hotel", params={"status": "sleeping"}, headers=operator)).status_code == 422


async def test_permissions_on_every_route(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        operator = await platform.service_headers("operator")
        body = hotel_body()
        hotel_id = await add_hotel(client, operator, body)
        await wait_for_status(client, operator, hotel_id)

        # The hotel's administrator signs up with the invitation link and reads their hotel.
        admin = await sign_up_admin(client, tap, hotel_id, body["administrator"]["email"])
        assert (await client.get(f"/hotel/{hotel_id}", headers=admin.headers)).json()["status"] == "ready"
        steps = (await client.get(f"/hotel/{hotel_id}/provisioning", headers=admin.headers)).json()["steps"]
        assert len(steps) == len(STEPS)

        # Another hotel's administrator: that hotel does not exist for them.
        stranger = await make_admin(platform, client, "boss@elsewhere.example.com", hotel_name="Elsewhere")
        news = await platform.service_headers("news")  # a platform service without hotel:provision
        writes = [
            ("POST", "/hotel/add", hotel_body()),
            ("GET", "/hotel", None),
            ("PATCH", f"/hotel/{hotel_id}", {"name": "x"}),
            ("DELETE", f"/hotel/{hotel_id}", None),
        ]
        for method, path, json in writes:
            assert (await client.request(method, path, json=json)).status_code == 401, path
            # The hotel's own staff, even its administrator, may not provision.
            for headers in (admin.headers, stranger.headers, news):
                response = await client.request(method, path, json=json, headers=headers)
                assert response.status_code == 403, (method, path, response.text)
        for path in (f"/hotel/{hotel_id}", f"/hotel/{hotel_id}/provisioning"):
            assert (await client.get(path)).status_code == 401
            assert (await client.get(path, headers=news)).status_code == 403
            assert (await client.get(path, headers=stranger.headers)).status_code == 404
        bad_token = {"Authorization": "Bearer not-a-token"}
        assert (await client.get(f"/hotel/{hotel_id}", headers=bad_token)).status_code == 401
