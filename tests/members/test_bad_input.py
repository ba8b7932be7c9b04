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
            assert _invalid_cursor(await client.get(f"/members/get/by/hotel_id/{admin.ecosystem_id}",
                                                    params={"cursor": cursor}, headers=service))
            assert _invalid_cursor(await client.post("/members/sync", json={"cursor": cursor}, headers=service))
        # A genuine cursor of one list is not a position in another.
        assert _invalid_cursor(await client.post("/members/sync", json={"cursor": page_shaped}, headers=service))
        feed_shaped = encode_cursor(10**400, "x")
        assert _invalid_cursor(await client.get("/members/", params={"cursor": feed_shaped}, headers=admin.headers))
