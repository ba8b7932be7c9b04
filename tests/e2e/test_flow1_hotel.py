"""Seed Flow 1 end to end over real HTTP and the run's broker (RabbitMQ with
ROOMEE_TEST_BACKEND=real): an operator's service adds a premium hotel; the QR code is a PNG on
fake-gcs-server that decodes back to the join link; media holds a 20 000 MO quota; billing's
subscription exists in Stripe (localstripe, through the real SDK); the administrator signs up with
the invitation, signs in, and receives ``hotel.created`` over Socket.IO."""

from __future__ import annotations

import asyncio
import io

import zxingcpp
from PIL import Image

from roomee.notification.channels import NOTIFICATION_NEW
from tests.fixtures.events import event_tap
from tests.fixtures.gcs import fake_gcs, gcs_settings  # noqa: F401 (fixture)
from tests.fixtures.stripe import WEBHOOK_SECRET, localstripe  # noqa: F401 (fixture)
from tests.hotel.support import hotel_body, platform_behind_proxy, sign_up_admin, wait_for_status
from tests.notification.support import SocketInbox


async def test_flow1_hotel_ecosystem(tmp_path, monkeypatch, localstripe, fake_gcs):
    await localstripe.reset()
    overrides = {
        "billing_provider": "stripe", "stripe_api_key": localstripe.api_key, "stripe_api_url": localstripe.url,
        "stripe_webhook_secret": WEBHOOK_SECRET, **gcs_settings(fake_gcs, tmp_path),
        "saga_max_attempts": 8,  # the held admin step times out and is retried while the admin signs up
    }
    async with platform_behind_proxy(tmp_path, monkeypatch, **overrides) as (running, proxy), \
            running.client() as client, event_tap(running) as tap:
        operator = await running.service_headers("operator")
        body = hotel_body(plan="premium")
        admin_email = body["administrator"]["email"]
        # Hold members' answer to the admin creation, so the administrator is online before hotel.created.
        admin_created = proxy.hold("POST", "/members/add/hotel/member", after=True)
        # Its retries look the administrator up (the first answer was lost): hold those as well.
        admin_found = proxy.hold("GET", r"/members/get/by/hotel_id/.+", after=True, times=None)
        response = await client.post("/hotel/add", json=body, headers={**operator, "Idempotency-Key": "flow-1"})
        assert response.status_code == 202, response.text
        hotel_id = response.json()["id"]

        await asyncio.wait_for(admin_created.reached.wait(), 60)
        admin = await sign_up_admin(client, tap, hotel_id, admin_email)
        assert admin.hotel_id == hotel_id and admin.session["member"]["role"] == "admin"
        socket = await SocketInbox(NOTIFICATION_NEW).connect(running, admin)
        try:
            proxy.release(admin_created)
            proxy.release(admin_found)
            document = await wait_for_status(client, operator, hotel_id)
            assert document["status"] == "ready", document
            notified = await socket.wait(NOTIFICATION_NEW, lambda p: p["type"] == "hotel.created", timeout=30)
            assert body["name"] in notified["body"]
        finally:
            await socket.close()

        hotel = (await client.get(f"/hotel/{hotel_id}", headers=admin.headers)).json()
        assert hotel["adminMemberId"] == admin.member_id

        # The QR code: a PNG object in the bucket, public, decoding back to the join link.
        bucket = overrides["media_gcs_bucket"]
        objects = await asyncio.to_thread(fake_gcs.object_names, bucket)
        assert {name.rsplit("/", 1)[0] for name in objects} == {f"{hotel_id}/{hotel['qrLink'].split('/')[-2]}"}, objects
        png = await client.get(hotel["qrLink"], follow_redirects=True)
        assert png.status_code == 200, png.text
        [code] = zxingcpp.read_barcodes(Image.open(io.BytesIO(png.content)))
        assert code.text == f"{running.url}/join/{hotel_id}"

        # The quota of a premium hotel.
        storage = (await client.get("/media/storage", headers=admin.headers)).json()
        assert (storage["maxSize"], storage["unit"]) == (20000, "MO")
        assert storage["quotaBytes"] == 20_000 * 1_000_000  # the seed's "20GB pour Premium": decimal MO

        # The subscription, in Stripe.
        sdk, http = localstripe.client()
        try:
            found = (await sdk.v1.subscriptions.retrieve_async(hotel["subscriptionId"])).to_dict()
        finally:
            await http.close_async()
        assert found["status"] in ("active", "trialing", "incomplete")
        assert found["metadata"]["roomee_hotel_id"] == hotel_id
        assert "premium" in found["items"]["data"][0]["plan"]["id"]
