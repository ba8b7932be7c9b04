"""Seed rule 1 for media: a member of hotel A never reaches hotel B's media or storage (404)."""

from __future__ import annotations

from tests.fixtures.media import direct_upload, grant_storage, jpeg, presign, service_upload
from tests.fixtures.people import make_admin


async def test_every_media_route_is_scoped_to_the_callers_hotel(media_platform):
    async with media_platform.client() as client:
        hotel_a = await make_admin(media_platform, client, "a-admin@example.com", "Hotel A")
        hotel_b = await make_admin(media_platform, client, "b-admin@example.com", "Hotel B")
        for person in (hotel_a, hotel_b):
            await grant_storage(media_platform, person.hotel_id, 10)
        b_photo = jpeg(300, 200)
        b_media = (await direct_upload(client, hotel_b, b_photo, "image/jpeg", "b-secret.jpg")).json()
        b_pending = (await presign(client, hotel_b, b_photo, "image/jpeg", "b-pending.jpg")).json()
        hotel = await media_platform.service_headers("hotel")
        b_private_qr = (await service_upload(client, hotel, hotel_b.hotel_id, jpeg(50, 50), "image/jpeg")).json()

        # hotel_a is an administrator (every permission) — of another hotel.
        attempts = [
            ("GET", f"/media/{b_media['id']}", None),
            ("GET", f"/media/{b_pending['id']}", None),
            ("GET", f"/media/{b_media['id']}/file", None),
            ("GET", f"/media/{b_media['id']}/thumbnail", None),
            ("GET", f"/media/{b_private_qr['id']}/file", None),
            ("DELETE", f"/media/{b_media['id']}", None),
            ("DELETE", f"/media/{b_pending['id']}", None),
            ("POST", "/media/upload-complete", {"id": b_pending["id"]}),
            ("POST", "/media/upload-complete", {"id": b_media["id"]}),
        ]
        for method, path, body in attempts:
            response = await client.request(method, path, json=body, headers=hotel_a.headers)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"] == "not_found"
            assert "b-secret" not in response.text and hotel_b.hotel_id not in response.text

        # Lists and storage show only one's own hotel.
        assert (await client.get("/media", headers=hotel_a.headers)).json()["items"] == []
        storage_a = (await client.get("/media/storage", headers=hotel_a.headers)).json()
        assert storage_a["ecosystemId"] == hotel_a.hotel_id and storage_a["usedBytes"] == 0
        # Service-only storage routes refuse members, whatever their hotel.
        for method in ("GET", "DELETE"):
            response = await client.request(method, f"/media/storage/{hotel_b.hotel_id}", headers=hotel_a.headers)
            assert response.status_code == 403
        # A direct upload lands in the caller's own hotel only.
        a_media = (await direct_upload(client, hotel_a, jpeg(10, 10), "image/jpeg")).json()
        assert a_media["ecosystemId"] == hotel_a.hotel_id

        # Nothing changed in B.
        still = await client.get(f"/media/{b_media['id']}", headers=hotel_b.headers)
        assert still.status_code == 200 and still.json()["status"] == "completed"
        file = await client.get(b_media["fileUrl"], headers=hotel_b.headers, follow_redirects=True)
        assert file.status_code == 200 and file.content == b_photo
        assert (await client.get("/media/storage", headers=hotel_b.headers)).json()["reservedBytes"] == len(b_photo)
