"""Workspaces of a hotel for platform services (scope ``members:workspaces``; the operator's Workspaces)."""

from __future__ import annotations

import uuid


async def _admin_of_new_hotel(client, headers, hotel_id: str) -> dict:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    response = await client.post("/members/add/hotel/member", headers=headers, json={
        "hotelId": hotel_id, "hotelName": "Lac", "workspaceName": "Lac", "email": email,
        "firstName": "Ada", "lastName": "Admin", "isAdmin": True, "dashboardAccess": True,
    })
    assert response.status_code == 201, response.text
    return response.json()


async def test_put_is_idempotent_update_and_delete_and_events(platform):
    hotel_id, workspace_id = str(uuid.uuid4()), str(uuid.uuid4())
    path = f"/members/hotels/{hotel_id}/workspaces/{workspace_id}"
    async with platform.client() as client:
        headers = await platform.service_headers("operator")
        body = {"name": "Housekeeping", "locale": "fr", "timezone": "Europe/Paris"}
        first = await client.put(path, json=body, headers=headers)
        assert first.status_code == 201, first.text
        assert first.json()["id"] == workspace_id and first.json()["ecosystemId"] == hotel_id
        again = await client.put(path, json={**body, "name": "Other"}, headers=headers)
        assert again.status_code == 200 and again.json()["name"] == "Housekeeping"

        renamed = await client.patch(path, json={"name": "Front desk", "timezone": "Europe/London"}, headers=headers)
        assert renamed.status_code == 200 and renamed.json()["name"] == "Front desk"
        assert renamed.json()["timezone"] == "Europe/London"

        assert (await client.delete(path, headers=headers)).status_code == 204
        assert (await client.delete(path, headers=headers)).status_code == 204  # idempotent
        assert (await client.patch(path, json={"name": "x"}, headers=headers)).status_code == 404
        reused = await client.put(path, json=body, headers=headers)
        assert reused.status_code == 410 and reused.json()["error"] == "workspace_deleted"


async def test_another_hotels_workspace_is_not_found_and_members_are_removed_with_it(platform):
    hotel_id, other_hotel = str(uuid.uuid4()), str(uuid.uuid4())
    async with platform.client() as client:
        headers = await platform.service_headers("operator")
        hotel_member_headers = await platform.service_headers("hotel")
        admin = await _admin_of_new_hotel(client, hotel_member_headers, hotel_id)
        workspace_id = admin["workspace"]["id"]
        elsewhere = f"/members/hotels/{other_hotel}/workspaces/{workspace_id}"
        assert (await client.put(elsewhere, json={"name": "Steal"}, headers=headers)).status_code == 404
        assert (await client.patch(elsewhere, json={"name": "Steal"}, headers=headers)).status_code == 404
        assert (await client.delete(elsewhere, headers=headers)).status_code == 404
        never = f"/members/hotels/{hotel_id}/workspaces/{uuid.uuid4()}"
        assert (await client.delete(never, headers=headers)).status_code == 404

        own = f"/members/hotels/{hotel_id}/workspaces/{workspace_id}"
        assert (await client.delete(own, headers=headers)).status_code == 204
        members = await client.get(f"/members/get/by/hotel_id/{hotel_id}", headers=hotel_member_headers)
        assert members.status_code == 200 and members.json()["items"] == []


async def test_scope_and_bad_input(platform):
    hotel_id = str(uuid.uuid4())
    path = f"/members/hotels/{hotel_id}/workspaces/{uuid.uuid4()}"
    async with platform.client() as client:
        assert (await client.put(path, json={"name": "x"})).status_code == 401
        no_scope = await platform.service_headers("notification")
        response = await client.put(path, json={"name": "x"}, headers=no_scope)
        assert response.status_code == 403 and response.json()["error"] == "insufficient_scope"
        headers = await platform.service_headers("operator")
        bad_id = await client.put(f"/members/hotels/{hotel_id}/workspaces/not-a-uuid", json={"name": "x"}, headers=headers)
        assert bad_id.status_code == 422 and bad_id.json()["error"] == "validation_error"
        for body in ({}, {"name": ""}, {"name": "x", "locale": "French"}):
            response = await client.put(path, json=body, headers=headers)
            assert response.status_code == 422, (body, response.text)
