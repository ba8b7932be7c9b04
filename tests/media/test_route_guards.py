"""What tests/media/test_tenant_isolation.py and test_media_api.py leave out: no token is 401 on every
token route; a service token is 403 on the member routes and where it lacks the scope (news reads
media but neither deletes them nor reads storage; billing holds no media scope); an id that is not
one is a clear 4xx with the kit's error body, never a 500."""

from __future__ import annotations

from tests.fixtures.media import direct_upload, grant_storage, jpeg
from tests.fixtures.people import make_admin


async def test_member_routes_refuse_services_and_services_need_their_scope(local_media_platform):
    running = local_media_platform
    async with running.client() as client:
        admin = await make_admin(running, client, "admin@example.com")
        hotel_id = admin.session["member"]["ecosystemId"]  # the wire name, whatever the code calls it
        await grant_storage(running, hotel_id, 10)
        media = (await direct_upload(client, admin, jpeg(60, 40), "image/jpeg")).json()
        presign = {"fileName": "a.jpg", "contentType": "image/jpeg", "size": 10}
        member_routes = [
            ("POST", "/media/generate-presigned-url", presign),
            ("POST", "/media/upload-complete", {"id": media["id"]}),
            ("GET", "/media", None),
            ("GET", "/media/storage", None),
        ]
        news, billing = await running.service_headers("news"), await running.service_headers("billing")
        for method, path, body in member_routes:
            assert (await client.request(method, path, json=body)).status_code == 401, path
            refused = await client.request(method, path, json=body, headers=news)
            assert refused.status_code == 403, (method, path, refused.text)

        scoped = [
            (news, "DELETE", f"/media/{media['id']}"),  # media:read only
            (news, "GET", f"/media/storage/{hotel_id}"),
            (billing, "GET", f"/media/{media['id']}"),  # no media scope at all
            (billing, "DELETE", f"/media/{media['id']}"),
            (billing, "GET", f"/media/storage/{hotel_id}"),
        ]
        for headers, method, path in scoped:
            assert (await client.request(method, path)).status_code == 401, path
            refused = await client.request(method, path, headers=headers)
            assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope", (path, refused.text)

        # Odd ids: an encoded slash matches no route, a NUL is refused before any route.
        hotel = await running.service_headers("hotel")
        for odd, expected in (("a%2Fb", {404}), ("nul%00", {422}), ("%C3%A9t%C3%A9", {404}), ("x" * 37, {422})):
            for method, path, headers in (("GET", f"/media/{odd}", admin.headers),
                                          ("DELETE", f"/media/{odd}", admin.headers),
                                          ("GET", f"/media/{odd}/file", admin.headers),
                                          ("GET", f"/media/{odd}/thumbnail", admin.headers),
                                          ("GET", f"/media/storage/{odd}", hotel)):
                response = await client.request(method, path, headers=headers)
                long_hotel_id = path.startswith("/media/storage/") and odd == "x" * 37  # hotel ids: up to 64
                assert response.status_code in ({404} if long_hotel_id else expected), (method, path, response.text)
                assert response.json()["error"], response.text

        # Nothing was deleted by any of it.
        still = await client.get(f"/media/{media['id']}", headers=admin.headers)
        assert still.status_code == 200 and still.json()["status"] == "completed"
