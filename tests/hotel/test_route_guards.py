"""Hotel routes with ids that are not hotel ids (encoded slash, NUL, non-ASCII, quotes, very long):
a clear 4xx with the kit's error body, never a 500, whoever asks; the permission checks come first
(tests/hotel/test_hotel_api.py covers the well-formed ids)."""

from __future__ import annotations

from tests.fixtures.people import make_admin

# An encoded slash matches no route; a NUL is refused (422 invalid_text) before any route.
ODD_IDS = [("a%2Fb", {404}), ("nul%00", {422}), ("%C3%A9t%C3%A9", {404}), ("%27%3B--", {404}), ("x" * 2000, {422})]


async def test_odd_hotel_ids_are_a_clear_4xx(platform):
    async with platform.client() as client:
        operator = await platform.service_headers("operator")
        news = await platform.service_headers("news")  # no hotel:provision
        member = await make_admin(platform, client, "boss@odd-ids.example.com", hotel_name="Odd")
        for odd, expected in ODD_IDS:
            routes = [("GET", f"/hotel/{odd}", None), ("GET", f"/hotel/{odd}/provisioning", None),
                      ("PATCH", f"/hotel/{odd}", {"name": "x"}), ("DELETE", f"/hotel/{odd}", None)]
            for method, path, body in routes:
                response = await client.request(method, path, json=body, headers=operator)
                assert response.status_code in expected, (method, path, response.text)
                assert response.json()["error"], response.text
                if "%2F" in odd or "%00" in odd:
                    continue  # refused before any route: nothing to authorise
                # Reads take any valid token and decide in the service, so an id longer than any hotel id is
                # refused first (422); writes need hotel:provision before anything else.
                too_long = len(odd) > 64
                refused = await client.request(method, path, json=body, headers=news)
                assert refused.status_code == (422 if too_long and method == "GET" else 403), (method, path, refused.text)
                as_member = await client.request(method, path, json=body, headers=member.headers)
                # Reads: another hotel's id does not exist for a member; writes need hotel:provision.
                read = 422 if too_long else 404
                assert as_member.status_code == (read if method == "GET" else 403), (method, path, as_member.text)
