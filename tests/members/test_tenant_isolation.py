"""Seed rule 1: a member of workspace A never reaches workspace B's data (404, not the data)."""

from __future__ import annotations

from tests.fixtures.events import event_tap
from tests.fixtures.people import invite_and_join, make_admin


async def test_every_members_route_is_scoped_to_the_callers_workspace(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        hotel_a = await make_admin(platform, client, "a-admin@example.com", "Hotel A")
        hotel_b = await make_admin(platform, client, "b-admin@example.com", "Hotel B")
        b_staff = await invite_and_join(client, tap, hotel_b, "b-staff@example.com")
        b_workspace = hotel_b.workspace_id

        # hotel_a is an administrator (every permission) — of another hotel.
        attempts = [
            ("GET", f"/members/{b_staff.member_id}", None),
            ("PATCH", f"/members/{b_staff.member_id}", {"role": "manager"}),
            ("DELETE", f"/members/{b_staff.member_id}", None),
            ("GET", f"/workspaces/{b_workspace}", None),
            ("PATCH", f"/workspaces/{b_workspace}", {"name": "Mine now"}),
            ("DELETE", f"/workspaces/{b_workspace}", None),
            ("GET", f"/members/get/by/hotel_id/{hotel_b.hotel_id}", None),
        ]
        for method, path, body in attempts:
            response = await client.request(method, path, json=body, headers=hotel_a.headers)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"] == "not_found"
            assert "b-staff@example.com" not in response.text

        listed = await client.get("/members/", headers=hotel_a.headers)
        assert [m["email"] for m in listed.json()["items"]] == ["a-admin@example.com"]
        workspaces = await client.get("/workspaces", headers=hotel_a.headers)
        assert [w["id"] for w in workspaces.json()] == [hotel_a.workspace_id]

        # Nothing changed in B.
        still = await client.get(f"/members/{b_staff.member_id}", headers=hotel_b.headers)
        assert still.status_code == 200 and still.json()["role"] == "staff"

        # Inside one hotel: a staff member does not see a sibling workspace it does not belong to.
        sibling = await client.post("/workspaces", json={"name": "Spa"}, headers=hotel_b.headers)
        assert sibling.status_code == 201, sibling.text
        assert (await client.get(f"/workspaces/{sibling.json()['id']}", headers=b_staff.headers)).status_code == 404
        assert (await client.get(f"/workspaces/{sibling.json()['id']}", headers=hotel_b.headers)).status_code == 200


async def test_permissions_are_enforced(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        staff = await invite_and_join(client, tap, admin, "staff@example.com")
        manager = await invite_and_join(client, tap, admin, "manager@example.com", role="manager")

        denied = await client.post("/members/", json={"email": "x@example.com"}, headers=staff.headers)
        assert denied.status_code == 403
        assert denied.json() == {"error": "permission_denied", "detail": "permission 'manage_members' required"}

        # A manager invites staff but cannot mint administrators.
        assert (await client.post("/members/", json={"email": "y@example.com"}, headers=manager.headers)).status_code == 201
        escalate = await client.post("/members/", json={"email": "z@example.com", "role": "admin"}, headers=manager.headers)
        assert escalate.status_code == 403
        promote = await client.patch(f"/members/{staff.member_id}", json={"role": "admin"}, headers=manager.headers)
        assert promote.status_code == 403

        # Staff may edit their own name but not their role.
        own = await client.patch(f"/members/{staff.member_id}", json={"firstName": "Sam"}, headers=staff.headers)
        assert own.status_code == 200 and own.json()["firstName"] == "Sam"
        self_promote = await client.patch(f"/members/{staff.member_id}", json={"role": "manager"}, headers=staff.headers)
        assert self_promote.status_code == 403

        # Service-to-service routes refuse member tokens.
        for method, path, body in [
            ("POST", "/members/add/hotel/member", {"hotelId": "h", "email": "q@example.com"}),
            ("GET", "/members/get/with/admin@example.com", None),
            ("POST", "/members/sync", {}),
        ]:
            response = await client.request(method, path, json=body, headers=admin.headers)
            assert response.status_code == 403, (path, response.text)

        # The last administrator stays.
        last = await client.delete(f"/members/{admin.member_id}", headers=admin.headers)
        assert last.status_code == 409 and last.json()["error"] == "last_admin"

        bad = await client.post("/members/", json={"email": "not-an-email"}, headers=admin.headers)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "email"]
        duplicate = await client.post("/members/", json={"email": "staff@example.com"}, headers=admin.headers)
        assert duplicate.status_code == 409 and duplicate.json()["error"] == "already_member"
