"""``GET /media/{id}/object``: whether a media's object is still in storage (on each backend), for the
caller's hotel or a service with `media:read`; an object deleted behind media's back reads false."""

from __future__ import annotations

from roomee.media.service import STORAGE
from tests.fixtures.media import grant_storage, png, service_upload
from tests.fixtures.people import make_admin


async def test_an_object_deleted_behind_medias_back_reads_not_stored(media_platform):
    async with media_platform.client() as client:
        owner = await make_admin(media_platform, client, "qr-owner@example.com", "QR Hotel")
        stranger = await make_admin(media_platform, client, "qr-stranger@example.com", "Other Hotel")
        await grant_storage(media_platform, owner.hotel_id, 10)
        hotel = await media_platform.service_headers("hotel")  # holds media:read
        uploaded = (await service_upload(client, hotel, owner.hotel_id, png(), "image/png")).json()
        path = f"/media/{uploaded['id']}/object"

        for headers in (hotel, owner.headers):
            found = await client.get(path, headers=headers)
            assert found.status_code == 200, found.text
            assert found.json() == {"id": uploaded["id"], "ecosystemId": owner.hotel_id, "stored": True,
                                    "size": uploaded["size"]}
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers=stranger.headers)).json()["error"] == "not_found"
        operator = await media_platform.service_headers("operator")  # a service without media:read
        assert (await client.get(path, headers=operator)).status_code == 403
        assert (await client.get("/media/unknown/object", headers=hotel)).status_code == 404
        assert (await client.get(f"/media/{'x' * 37}/object", headers=hotel)).status_code == 422

        storage = media_platform.platform.services["media"].state[STORAGE]
        await storage.delete(f"{owner.hotel_id}/{uploaded['id']}/original")
        lost = (await client.get(path, headers=hotel)).json()
        assert (lost["stored"], lost["size"]) == (False, None)
        assert (await client.get(f"/media/{uploaded['id']}", headers=hotel)).status_code == 200  # the row stays
