"""Bad input on the members routes answers 4xx with the error document, never 500."""

from __future__ import annotations

import base64
import json

from roomee.kit.schemas import encode_cursor
from tests.fixtures.people import make_admin
from tests.members.test_members_api import service_headers

UNSIGNED = "WyJ4IiwgInkiXQ"  # base64 of ["x", "y"]: the shape of a page cursor, not produced by the platform
HUGE = base64.urlsafe_b64encode(json.dumps([10**400, "x"]).encode()).decode().rstrip("=")


def _invalid_cursor(response) -> bool:
    return response.status_code == 422 and response.json()["error"] == "invalid_cursor"


async def test_forged_cursors_answer_422_on_every_members_list(platform):
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        service = await service_headers(platform)
        page_shaped = encode_cursor("2026-01-01T00:00:00+00:00", "x")
        for cursor in (UNSIGNED, HUGE, "%%%"):
            assert _invalid_cursor(await client.get("/members/", params={"cursor": cursor}, headers=admin.headers))
            assert _invalid_cursor(await client.get(f"/members/get/by/hotel_id/{admin.hotel_id}",
                                                    params={"cursor": cursor}, headers=service))
            assert _invalid_cursor(await client.post("/members/sync", json={"cursor": cursor}, headers=service))
        # A genuine cursor of one list is not a position in another.
        assert _invalid_cursor(await client.post("/members/sync", json={"cursor": page_shaped}, headers=service))
        feed_shaped = encode_cursor(10**400, "x")
        assert _invalid_cursor(await client.get("/members/", params={"cursor": feed_shaped}, headers=admin.headers))
        # Signed, two strings, but no time where a page's position holds one (the kit's time-cursor decoder).
        no_time = encode_cursor("not a time", "x")
        assert _invalid_cursor(await client.get("/members/", params={"cursor": no_time}, headers=admin.headers))
        assert _invalid_cursor(await client.get(f"/members/get/by/hotel_id/{admin.hotel_id}",
                                                params={"cursor": no_time}, headers=service))


def _validation_error(response) -> bool:
    return response.status_code == 422 and response.json()["error"] == "validation_error"


async def test_null_for_a_required_field_of_a_partial_update_answers_422(platform):
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        member_url, workspace_url = f"/members/{admin.member_id}", f"/workspaces/{admin.workspace_id}"
        for field in ("firstName", "lastName", "role", "dashboardAccess"):
            assert _validation_error(await client.patch(member_url, json={field: None}, headers=admin.headers)), field
        for field in ("name", "locale", "timezone"):
            assert _validation_error(await client.patch(workspace_url, json={field: None}, headers=admin.headers)), field
        # A member's own locale and time zone may be cleared: the workspace's apply.
        cleared = await client.patch(member_url, json={"locale": None, "timezone": None}, headers=admin.headers)
        assert cleared.status_code == 200 and cleared.json()["timezone"] is None
        workspace = (await client.get(workspace_url, headers=admin.headers)).json()
        assert workspace["name"] and workspace["timezone"] == "Europe/Paris"


async def test_time_zones_must_be_iana_names(platform):
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        for zone in ("Not/AZone", "America", "../../etc/passwd", ""):
            assert _validation_error(await client.post("/workspaces", json={"name": "Spa", "timezone": zone},
                                                       headers=admin.headers)), zone
            assert _validation_error(await client.patch(f"/workspaces/{admin.workspace_id}", json={"timezone": zone},
                                                        headers=admin.headers)), zone
            assert _validation_error(await client.patch(f"/members/{admin.member_id}", json={"timezone": zone},
                                                        headers=admin.headers)), zone
        hotel = {"hotelId": "hotel-tz", "email": "boss@tz.example.com", "timezone": "Not/AZone"}
        assert _validation_error(await client.post("/members/add/hotel/member", json=hotel,
                                                   headers=await service_headers(platform)))
        kept = await client.patch(f"/members/{admin.member_id}", json={"timezone": "America/New_York"},
                                  headers=admin.headers)
        assert kept.status_code == 200 and kept.json()["timezone"] == "America/New_York"
