"""What provisioning made, undone behind the platform's back, is found and redone: a subscription
canceled directly in Stripe (localstripe, through the SDK) and a QR code deleted from media's storage.
``GET /hotel/{id}/health`` reports them, ``POST /hotel/{id}/repair`` makes a new subscription on the
hotel's plan and uploads the QR code again; repeated or concurrent, it makes each once."""

from __future__ import annotations

import asyncio

from roomee.media.service import STORAGE
from tests.billing.test_closure import stripe_leftovers
from tests.fixtures.events import event_tap
from tests.fixtures.people import make_admin
from tests.fixtures.platform import make_settings, running_platform
from tests.fixtures.stripe import WEBHOOK_SECRET, localstripe  # noqa: F401 (fixture)
from tests.hotel.support import FAST_SAGA, add_hotel, hotel_body, platform_behind_proxy, sign_up_admin, wait_for_status
from tests.hotel.test_retry import WAIT_LONG


async def cancel_in_stripe(local_stripe, subscription_id: str) -> None:
    sdk, http = local_stripe.client()
    try:
        await sdk.v1.subscriptions.cancel_async(subscription_id)
    finally:
        await http.close_async()


async def delete_qr_object(running, hotel: dict) -> str:
    """Remove the QR code's object through media's own storage (its row stays); the media id."""
    media_id = hotel["qrLink"].rstrip("/").split("/")[-2]
    storage = running.platform.services["media"].state[STORAGE]
    await storage.delete(f"{hotel['id']}/{media_id}/original")
    return media_id


def by_name(health: dict) -> dict:
    return {check["name"]: check for check in health["checks"]}


async def test_a_stripe_cancel_and_a_lost_qr_are_reported_then_repaired_once(tmp_path, localstripe):  # noqa: F811
    await localstripe.reset()
    settings = make_settings(tmp_path, **FAST_SAGA, billing_provider="stripe", stripe_api_key=localstripe.api_key,
                             stripe_api_url=localstripe.url, stripe_webhook_secret=WEBHOOK_SECRET)
    async with running_platform(settings) as running, running.client() as client:
        operator = await running.service_headers("operator")
        hotel_id = await add_hotel(client, operator)
        ready = await wait_for_status(client, operator, hotel_id, statuses=("ready",))
        health = (await client.get(f"/hotel/{hotel_id}/health", headers=operator)).json()
        assert health["healthy"] and health["repaired"] == [], health

        await cancel_in_stripe(localstripe, ready["subscriptionId"])
        hotel = (await client.get(f"/hotel/{hotel_id}", headers=operator)).json()
        lost = await delete_qr_object(running, hotel)
        assert (await client.get(hotel["qrLink"])).status_code == 404  # media: file_missing
        health = (await client.get(f"/hotel/{hotel_id}/health", headers=operator)).json()
        assert not health["healthy"]
        assert by_name(health)["subscription"]["reason"] == "SubscriptionCancelled", health
        assert by_name(health)["qr"]["reason"] == "QRMissing", health

        # Two repairs at once: one new subscription, one new QR code.
        first, second = await asyncio.gather(*(client.post(f"/hotel/{hotel_id}/repair", headers=operator)
                                               for _ in range(2)))
        assert first.status_code == second.status_code == 200, (first.text, second.text)
        repaired = first.json()
        assert repaired["healthy"] and set(first.json()["repaired"]) | set(second.json()["repaired"]) == {
            "subscription", "qr"}, (first.json(), second.json())
        hotel = (await client.get(f"/hotel/{hotel_id}", headers=operator)).json()
        assert hotel["subscriptionId"] not in (None, ready["subscriptionId"])
        assert lost not in hotel["qrLink"]
        qr = await client.get(hotel["qrLink"])
        assert qr.status_code == 200 and qr.content.startswith(b"\x89PNG")

        again = (await client.post(f"/hotel/{hotel_id}/repair", headers=operator)).json()
        assert again["healthy"] and again["repaired"] == [] and again["subscriptionId"] == hotel["subscriptionId"]
        customers, live = await stripe_leftovers(localstripe, hotel_id)
        assert len(customers) == 1 and [(s["id"], s["status"] in ("active", "trialing", "incomplete")) for s in live] \
            == [(hotel["subscriptionId"], True)]
        hotel_headers = await running.service_headers("hotel")
        subscription = (await client.get(f"/sub/customers/{hotel_id}/subscription", headers=hotel_headers)).json()
        assert (subscription["id"], subscription["productId"]) == (hotel["subscriptionId"], "premium")
        # The lost object's media is deleted (its bytes no longer count), and the quota is the plan's again.
        assert (await client.get(f"/media/{lost}", headers=hotel_headers)).status_code == 404

        async def premium_quota():
            storage = (await client.get(f"/media/storage/{hotel_id}", headers=hotel_headers)).json()
            return storage["maxSize"] == 20000

        deadline = asyncio.get_running_loop().time() + 30
        while not await premium_quota():
            assert asyncio.get_running_loop().time() < deadline, "the storage quota is not premium's again"
            await asyncio.sleep(0.05)


async def test_health_and_repair_routes_check_who_asks_and_what(tmp_path, monkeypatch):
    async with platform_behind_proxy(tmp_path, monkeypatch, **WAIT_LONG) as (running, proxy), \
            running.client() as client, event_tap(running) as tap:
        operator = await running.service_headers("operator")
        body = hotel_body()
        hotel_id = await add_hotel(client, operator, body)
        await wait_for_status(client, operator, hotel_id, statuses=("ready",))
        admin = await sign_up_admin(client, tap, hotel_id, body["administrator"]["email"])
        stranger = await make_admin(running, client, "boss@repair-elsewhere.example.com", hotel_name="Elsewhere")
        news = await running.service_headers("news")  # a platform service without hotel:provision
        health, repair = f"/hotel/{hotel_id}/health", f"/hotel/{hotel_id}/repair"

        assert (await client.get(health)).status_code == 401
        assert (await client.post(repair)).status_code == 401
        assert (await client.get(health, headers={"Authorization": "Bearer not-a-token"})).status_code == 401
        # A member of the hotel reads its health; another hotel's does not exist for them; only a provisioner repairs.
        own = await client.get(health, headers=admin.headers)
        assert own.status_code == 200 and own.json()["healthy"], own.text
        assert (await client.get(health, headers=stranger.headers)).status_code == 404
        assert (await client.get(health, headers=news)).status_code == 403
        for headers in (admin.headers, stranger.headers, news):
            refused = await client.post(repair, headers=headers)
            assert refused.status_code == 403 and refused.json()["error"], refused.text
        # Ids: unknown 404, longer than any hotel id 422.
        for method in ("GET", "POST"):
            suffix = "health" if method == "GET" else "repair"
            assert (await client.request(method, f"/hotel/unknown/{suffix}", headers=operator)).status_code == 404
            too_long = await client.request(method, f"/hotel/{'x' * 65}/{suffix}", headers=operator)
            assert too_long.status_code == 422 and too_long.json()["error"] == "validation_error"

        # A hotel that is not ready is neither checked nor repaired (409); billing away is a 5xx, never a 500.
        proxy.fail("POST", r"/sub/assign-subscription/?", status=503)
        waiting_id = await add_hotel(client, operator)
        await wait_for_status(client, operator, waiting_id, statuses=("failed",))
        for method, suffix in (("GET", "health"), ("POST", "repair")):
            refused = await client.request(method, f"/hotel/{waiting_id}/{suffix}", headers=operator)
            assert (refused.status_code, refused.json()["error"]) == (409, "hotel_not_ready"), refused.text
        proxy.fail("GET", r"/sub/customers/[^/]+/subscription", status=503)
        away = await client.post(repair, headers=operator)
        assert away.status_code in (502, 503) and away.json()["error"], away.text
        proxy.clear()
        assert (await client.post(repair, headers=operator)).json()["repaired"] == []

        documented = (await client.get("/openapi.json")).json()["paths"]
        for path, method in (("/hotel/{hotel_id}/health", "get"), ("/hotel/{hotel_id}/repair", "post")):
            assert {"401", "403", "404", "409", "422", "502", "503"} <= set(documented[path][method]["responses"])
