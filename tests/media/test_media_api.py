"""The media target's routes, on both storage backends (local, and gcs on fake-gcs-server)."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import timedelta

from PIL import Image

from roomee.kit.clock import utcnow
from roomee.kit.events import Message, build_envelope
from tests.fixtures.events import event_tap
from tests.fixtures.media import (
    PDF, direct_upload, grant_storage, jpeg, png, presign, put_object, service_upload,
)
from tests.fixtures.people import invite_and_join, make_admin


def media_state(running):
    return running.platform.services["media"].state


def move_clock(running, delta: timedelta) -> None:
    media_state(running)["clock"] = lambda: utcnow() + delta


async def stored(running, media_id: str, hotel_id: str) -> bool:
    """Whether the original object of a media is still in storage (asked to the backend itself)."""
    return await media_state(running)["storage"].stat(f"{hotel_id}/{media_id}/original") is not None


async def usage(client, person) -> dict:
    response = await client.get("/media/storage", headers=person.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def sweep(running) -> None:
    """One sweep (expiry and object removal), run now."""
    from roomee.media.service import MediaService

    await MediaService(running.platform.services["media"]).sweep()


async def test_direct_upload_of_a_rotated_jpeg_gives_an_upright_thumbnail(media_platform):
    async with media_platform.client() as client:
        admin = await make_admin(media_platform, client, "admin@example.com")
        await grant_storage(media_platform, admin.hotel_id, 50)
        photo = jpeg(1200, 800, orientation=6)
        signed = await presign(client, admin, photo, "image/jpeg")
        assert signed.status_code == 201, signed.text
        body = signed.json()
        assert body["method"] == "PUT" and body["headers"]["Content-Type"] == "image/jpeg"
        assert (await usage(client, admin))["reservedBytes"] == len(photo)

        early = await client.post("/media/upload-complete", json={"id": body["id"]}, headers=admin.headers)
        assert early.status_code == 409 and early.json()["error"] == "upload_missing"
        pending = await client.get(f"/media/{body['id']}", headers=admin.headers)
        assert pending.json()["status"] == "pending" and pending.json()["fileUrl"] is None

        assert (await put_object(body, photo)).status_code in (200, 201)
        done = await client.post("/media/upload-complete", json={"mediaId": body["id"]}, headers=admin.headers)
        assert done.status_code == 200, done.text
        media = done.json()
        assert media["status"] == "completed" and media["contentType"] == "image/jpeg" and media["public"] is False
        assert (media["width"], media["height"], media["size"]) == (800, 1200, len(photo))

        thumb = await client.get(media["thumbnailUrl"], headers=admin.headers, follow_redirects=True)
        assert thumb.status_code == 200
        image = Image.open(io.BytesIO(thumb.content))
        assert image.format == "JPEG" and max(image.size) <= 320 and image.size[1] > image.size[0]
        assert not image.getexif() and "icc_profile" not in image.info
        w, h = image.size
        assert image.getpixel((w * 4 // 5, h // 2))[0] > 150  # the stored top (red) is displayed on the right
        assert image.getpixel((w // 5, h // 2))[2] > 150

        original = await client.get(media["fileUrl"], headers=admin.headers, follow_redirects=True)
        assert original.status_code == 200 and original.content == photo
        assert (await client.get(media["fileUrl"])).status_code == 401

        # Completing again returns the same media and counts nothing twice.
        again = await client.post("/media/upload-complete", json={"id": body["id"]}, headers=admin.headers)
        assert again.status_code == 200 and again.json() == media
        counters = await usage(client, admin)
        assert counters["reservedBytes"] == 0
        assert len(photo) < counters["usedBytes"] < len(photo) + 20_000  # the file and its thumbnail
        assert counters["quotaBytes"] == 50_000_000 and (counters["maxSize"], counters["unit"]) == (50, "MO")

        listed = await client.get("/media", headers=admin.headers)
        assert [m["id"] for m in listed.json()["items"]] == [media["id"]]


async def test_refused_uploads_count_nothing_and_keep_nothing(media_platform):
    async with media_platform.client() as client:
        admin = await make_admin(media_platform, client, "admin@example.com")
        assert (await presign(client, admin, PDF, "application/pdf")).json()["error"] == "storage_quota_missing"
        await grant_storage(media_platform, admin.hotel_id, 1)

        wrong_type = await presign(client, admin, b"MZ", "application/x-msdownload", "setup.exe")
        assert wrong_type.status_code == 415 and wrong_type.json()["error"] == "unsupported_content_type"
        oversize = await presign(client, admin, b"", "video/mp4", "film.mp4", size=10**9)
        assert oversize.status_code == 413 and oversize.json()["error"] == "file_too_large"
        over_quota = await presign(client, admin, b"", "video/mp4", "film.mp4", size=1_000_001)
        assert over_quota.status_code == 409 and over_quota.json()["error"] == "storage_quota_exceeded"
        assert over_quota.json()["detail"]["quotaBytes"] == 1_000_000

        # A JPEG announced as a PNG, and text announced as a PNG: refused, removed, released.
        for body, declared in ((jpeg(100, 100), "image/png"), (b"not an image at all" * 10, "image/png")):
            signed = (await presign(client, admin, body, declared, "fake.png")).json()
            assert (await put_object(signed, body)).status_code in (200, 201)
            lied = await client.post("/media/upload-complete", json={"id": signed["id"]}, headers=admin.headers)
            assert lied.status_code == 422 and lied.json()["error"] == "content_type_mismatch", lied.text
            assert not await stored(media_platform, signed["id"], admin.hotel_id)
            assert (await client.get(f"/media/{signed['id']}", headers=admin.headers)).status_code == 404
            again = await client.post("/media/upload-complete", json={"id": signed["id"]}, headers=admin.headers)
            assert again.status_code == 410 and again.json()["error"] == "upload_rejected"

        # A broken JPEG with a JPEG signature: refused as unreadable.
        broken = jpeg(400, 300)[:600]
        signed = (await presign(client, admin, broken, "image/jpeg")).json()
        await put_object(signed, broken)
        unreadable = await client.post("/media/upload-complete", json={"id": signed["id"]}, headers=admin.headers)
        assert unreadable.status_code == 422 and unreadable.json()["error"] == "unreadable_image"

        # An expired URL (the media target's clock moved past the 15 minutes).
        photo = jpeg(300, 200)
        signed = (await presign(client, admin, photo, "image/jpeg")).json()
        move_clock(media_platform, timedelta(minutes=15, seconds=5))
        put = await put_object(signed, photo)
        if media_platform.storage["media_storage"] == "local":
            assert put.status_code == 403 and put.json()["error"] == "signature_expired"
        late = await client.post("/media/upload-complete", json={"id": signed["id"]}, headers=admin.headers)
        assert late.status_code == 410 and late.json()["error"] == "upload_expired"
        assert not await stored(media_platform, signed["id"], admin.hotel_id)

        counters = await usage(client, admin)
        assert (counters["usedBytes"], counters["reservedBytes"]) == (0, 0)
        assert (await client.get("/media", headers=admin.headers)).json()["items"] == []


async def test_server_side_upload_for_services(media_platform):
    async with media_platform.client() as client:
        admin = await make_admin(media_platform, client, "admin@example.com")
        hotel = await media_platform.service_headers("hotel")
        qr = png(200, 200)
        # Before any quota (the hotel's QR code comes first in its saga): allowed, and counted.
        first = await service_upload(client, hotel, admin.hotel_id, qr, public=True, idempotency_key="qr-1")
        assert first.status_code == 201, first.text
        media = first.json()
        assert media["public"] is True and media["contentType"] == "image/png" and media["thumbnailUrl"]
        again = await service_upload(client, hotel, admin.hotel_id, qr, public=True, idempotency_key="qr-1")
        assert again.status_code == 201 and again.json()["id"] == media["id"]
        assert (await usage(client, admin))["usedBytes"] > len(qr)

        # A public file is served without a token; a private one is not.
        anonymous = await client.get(media["fileUrl"], follow_redirects=True)
        assert anonymous.status_code == 200 and anonymous.content == qr
        private = (await service_upload(client, hotel, admin.hotel_id, PDF, "application/pdf",
                                        file_name="terms.pdf")).json()
        assert private["thumbnailUrl"] is None and private["width"] is None
        assert (await client.get(private["fileUrl"])).status_code == 401
        member_view = await client.get(private["fileUrl"], headers=admin.headers, follow_redirects=True)
        assert member_view.status_code == 200 and member_view.content == PDF

        # A huge PNG (no reduced decoding) is stored without a thumbnail instead of decoded in full.
        huge = io.BytesIO()
        Image.new("1", (8000, 6000)).save(huge, format="PNG")
        poster = await service_upload(client, hotel, admin.hotel_id, huge.getvalue(), file_name="poster.png")
        assert poster.status_code == 201, poster.text
        assert (poster.json()["width"], poster.json()["height"], poster.json()["thumbnailUrl"]) == (8000, 6000, None)

        # Only a service holding media:upload; the bytes must be what they claim.
        news = await media_platform.service_headers("news")
        denied = await service_upload(client, news, admin.hotel_id, qr)
        assert denied.status_code == 403 and denied.json()["error"] == "insufficient_scope"
        assert (await service_upload(client, admin.headers, admin.hotel_id, qr)).status_code == 403
        assert (await service_upload(client, {}, admin.hotel_id, qr)).status_code == 401
        lying = await service_upload(client, hotel, admin.hotel_id, PDF, "image/png")
        assert lying.status_code == 422 and lying.json()["error"] == "content_type_mismatch"
        missing = await client.post("/media/upload", data={"public": "true"}, files={"file": ("a.png", qr, "image/png")},
                                    headers=hotel)
        assert missing.status_code == 422 and "ecosystemId" in json.dumps(missing.json()["detail"])

        # A service reads any media with media:read (news checks a page's media ids).
        seen = await client.get(f"/media/{media['id']}", headers=news)
        assert seen.status_code == 200 and seen.json()["ecosystemId"] == admin.hotel_id

        # The hotel removes its QR code: bytes released, object gone, idempotent.
        used_before = (await usage(client, admin))["usedBytes"]
        assert (await client.delete(f"/media/{media['id']}", headers=hotel)).status_code == 204
        assert (await client.delete(f"/media/{media['id']}", headers=hotel)).status_code == 204
        assert (await client.get(f"/media/{media['id']}", headers=news)).status_code == 404
        assert (await usage(client, admin))["usedBytes"] < used_before - len(qr)
        assert not await stored(media_platform, media["id"], admin.hotel_id)
        assert (await client.delete("/media/00000000-0000-0000-0000-000000000000", headers=hotel)).status_code == 404
        # After a deletion (a saga's compensation) the same key uploads a new file.
        anew = await service_upload(client, hotel, admin.hotel_id, qr, public=True, idempotency_key="qr-1")
        assert anew.status_code == 201 and anew.json()["id"] != media["id"]


async def test_members_delete_with_publish_pages_and_storage_is_deleted_for_a_hotel(media_platform):
    async with media_platform.client() as client, event_tap(media_platform) as tap:
        admin = await make_admin(media_platform, client, "admin@example.com")
        staff = await invite_and_join(client, tap, admin, "staff@example.com")
        await grant_storage(media_platform, admin.hotel_id, 10)
        by_admin = (await direct_upload(client, admin, jpeg(200, 100), "image/jpeg")).json()
        by_staff = (await direct_upload(client, staff, png(), "image/png", "own.png")).json()

        refused = await client.delete(f"/media/{by_admin['id']}", headers=staff.headers)
        assert refused.status_code == 403 and refused.json()["error"] == "permission_denied"
        assert (await client.delete(f"/media/{by_staff['id']}", headers=staff.headers)).status_code == 204  # own
        assert (await client.delete(f"/media/{by_admin['id']}", headers=admin.headers)).status_code == 204
        assert (await usage(client, admin))["usedBytes"] == 0

        kept = (await direct_upload(client, admin, jpeg(200, 100), "image/jpeg")).json()
        pending = (await presign(client, admin, PDF, "application/pdf", "later.pdf")).json()
        hotel = await media_platform.service_headers("hotel")
        news = await media_platform.service_headers("news")
        assert (await client.delete(f"/media/storage/{admin.hotel_id}", headers=news)).status_code == 403
        assert (await client.delete(f"/media/storage/{admin.hotel_id}", headers=hotel)).status_code == 204
        assert (await client.delete(f"/media/storage/{admin.hotel_id}", headers=hotel)).status_code == 204
        assert (await client.get(f"/media/storage/{admin.hotel_id}", headers=hotel)).status_code == 404
        assert (await client.get(f"/media/{kept['id']}", headers=admin.headers)).status_code == 404
        assert (await client.post("/media/upload-complete", json={"id": pending["id"]},
                                  headers=admin.headers)).status_code == 404
        await sweep(media_platform)
        assert not await stored(media_platform, kept["id"], admin.hotel_id)


async def test_quota_events_create_change_and_never_go_back(local_media_platform):
    async with local_media_platform.client() as client:
        admin = await make_admin(local_media_platform, client, "admin@example.com")
        await grant_storage(local_media_platform, admin.hotel_id, 20000)  # premium, as the seed's flow 1
        assert (await usage(client, admin))["quotaBytes"] == 20_000_000_000
        await grant_storage(local_media_platform, admin.hotel_id, 2, "GO")
        assert (await usage(client, admin))["quotaBytes"] == 2_000_000_000

        broker = local_media_platform.platform.broker
        stale = build_envelope(
            "storage.media", workspace_id=None, hotel_id=admin.hotel_id,
            payload={"ecosystemId": admin.hotel_id, "payload": {"max_size": 5, "unit": "MO"}},
            channels=(), timestamp=utcnow() - timedelta(hours=1),
        )
        malformed = build_envelope("storage.media", workspace_id=None, hotel_id=admin.hotel_id,
                                   payload={"payload": {"max_size": "lots", "unit": "MO"}}, channels=())
        await broker.publish_batch([Message("roomee.storage.media", json.dumps(e).encode(), {}, e["id"])
                                    for e in (stale, malformed)])
        queue = local_media_platform.settings.queue_prefix + "media_storage_queue"
        for _ in range(100):
            if await broker.dead_letters(queue):
                break
            await asyncio.sleep(0.05)
        dead = await broker.dead_letters(queue)
        assert [json.loads(d.body)["id"] for d in dead] == [malformed["id"]]
        assert (await usage(client, admin))["quotaBytes"] == 2_000_000_000


async def test_the_sweeper_frees_expired_reservations(local_media_platform):
    async with local_media_platform.client() as client:
        admin = await make_admin(local_media_platform, client, "admin@example.com")
        await grant_storage(local_media_platform, admin.hotel_id, 5)
        photo = jpeg(300, 300)
        signed = (await presign(client, admin, photo, "image/jpeg")).json()
        assert (await usage(client, admin))["reservedBytes"] == len(photo)
        await put_object(signed, photo)
        move_clock(local_media_platform, timedelta(minutes=16))
        media_state(local_media_platform)["sweep_wakeup"].set()  # the running worker, not a direct call
        for _ in range(100):
            if (await usage(client, admin))["reservedBytes"] == 0:
                break
            await asyncio.sleep(0.05)
        assert (await usage(client, admin))["reservedBytes"] == 0
        assert (await client.get(f"/media/{signed['id']}", headers=admin.headers)).status_code == 404
        assert not await stored(local_media_platform, signed["id"], admin.hotel_id)


async def test_concurrent_reservations_never_exceed_the_quota(local_media_platform):
    async with local_media_platform.client() as client:
        admin = await make_admin(local_media_platform, client, "admin@example.com")
        await grant_storage(local_media_platform, admin.hotel_id, 1)
        answers = await asyncio.gather(*(
            presign(client, admin, b"", "video/mp4", f"{n}.mp4", size=300_000) for n in range(8)
        ))
        assert sorted(a.status_code for a in answers) == [201] * 3 + [409] * 5
        assert (await usage(client, admin))["reservedBytes"] == 900_000


async def test_the_local_upload_url_checks_its_signature(local_media_platform):
    async with local_media_platform.client() as client:
        admin = await make_admin(local_media_platform, client, "admin@example.com")
        await grant_storage(local_media_platform, admin.hotel_id, 5)
        photo = jpeg(300, 300)
        signed = (await presign(client, admin, photo, "image/jpeg")).json()
        other = (await presign(client, admin, photo, "image/jpeg")).json()
        tampered = [
            {**signed, "headers": {**signed["headers"], "Content-Type": "image/png"}},  # another type
            {**signed, "uploadUrl": signed["uploadUrl"].replace("signature=", "signature=x")},
            {**signed, "uploadUrl": other["uploadUrl"].split("?")[0] + "?" + signed["uploadUrl"].split("?")[1]},
        ]
        for attempt in tampered:
            response = await put_object(attempt, photo)
            assert response.status_code == 403 and response.json()["error"] == "invalid_signature", response.text
        unsigned_length = {k: v for k, v in signed["headers"].items() if k != "Content-Length"}
        longer = await put_object({**signed, "headers": unsigned_length}, photo + b"x")  # the length is signed too
        assert longer.status_code == 403
        assert (await put_object(signed, photo)).status_code == 200
        assert (await client.post("/media/upload-complete", json={"id": signed["id"]},
                                  headers=admin.headers)).status_code == 200
        assert (await put_object(signed, photo)).status_code == 409  # completed: the URL is spent


async def test_bad_input_is_a_clear_4xx(local_media_platform):
    async with local_media_platform.client() as client:
        admin = await make_admin(local_media_platform, client, "admin@example.com")
        await grant_storage(local_media_platform, admin.hotel_id, 5)
        cases = [
            ("POST", "/media/generate-presigned-url", {"contentType": "image/png", "size": 10}, "fileName"),
            ("POST", "/media/generate-presigned-url", {"fileName": "a.png", "contentType": "image/png", "size": 0}, "size"),
            ("POST", "/media/generate-presigned-url", {"fileName": "a.png", "contentType": "image/png", "size": "big"}, "size"),
            ("POST", "/media/upload-complete", {}, "id"),
        ]
        for method, path, body, field in cases:
            response = await client.request(method, path, json=body, headers=admin.headers)
            assert response.status_code == 422, (path, body, response.text)
            assert response.json()["error"] == "validation_error" and field in json.dumps(response.json()["detail"])
        assert (await client.get("/media/" + "x" * 37, headers=admin.headers)).status_code == 422
        unknown = await client.post("/media/upload-complete", json={"id": "nope"}, headers=admin.headers)
        assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
        assert (await client.get("/media?cursor=forged", headers=admin.headers)).status_code == 422
        assert (await client.get("/media?limit=0", headers=admin.headers)).status_code == 422
        assert (await client.post("/media/generate-presigned-url", json={})).status_code == 401

        ids = [(await direct_upload(client, admin, png(8 + n, 8), "image/png", f"{n}.png")).json()["id"] for n in range(3)]
        first = (await client.get("/media?limit=2", headers=admin.headers)).json()
        second = (await client.get(f"/media?limit=2&cursor={first['nextCursor']}", headers=admin.headers)).json()
        assert [m["id"] for m in first["items"] + second["items"]] == ids[::-1] and second["nextCursor"] is None
