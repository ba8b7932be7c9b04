"""``DELETE /members/by/hotel_id/{id}``: a service with `members:remove-hotel-members` (the hotel
target, deleting a hotel or compensating its provisioning) removes every workspace and member of a hotel."""

from __future__ import annotations

from tests.fixtures.events import event_tap
from tests.fixtures.people import make_admin


async def add_member(client, headers, hotel_id: str, email: str, is_admin: bool = False) -> dict:
    response = await client.post("/members/add/hotel/member", headers=headers, json={
        "hotelId": hotel_id, "hotelName": "Hôtel", "email": email, "firstName": "A", "lastName": "B",
        "isAdmin": is_admin, "dashboardAccess": is_admin,
    })
    assert response.status_code == 201, response.text
    return response.json()


async def test_remove_every_member_of_a_hotel(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        as_hotel = await platform.service_headers("hotel")
        admin = await add_member(client, as_hotel, "hotel-x", "admin@x.example.com", is_admin=True)
        staff = await add_member(client, as_hotel, "hotel-x", "staff@x.example.com")
        other = await add_member(client, as_hotel, "hotel-y", "admin@y.example.com", is_admin=True)

        response = await client.delete("/members/by/hotel_id/hotel-x", headers=as_hotel)
        assert response.status_code == 200, response.text
        assert sorted(response.json()["removedMemberIds"]) == sorted([admin["member"]["id"], staff["member"]["id"]])
        assert response.json()["removedWorkspaceIds"] == [admin["workspace"]["id"]]
        left = (await client.get("/members/get/by/hotel_id/hotel-x", headers=as_hotel)).json()["items"]
        assert left == []
        kept = (await client.get("/members/get/by/hotel_id/hotel-y", headers=as_hotel)).json()["items"]
        assert [m["id"] for m in kept] == [other["member"]["id"]]
        deleted = await tap.wait_for("roomee.notification.workspace.deleted", lambda e: e["ecosystemId"] == "hotel-x")
        assert sorted(deleted["payload"]["removedMemberIds"]) == sorted(response.json()["removedMemberIds"])

        again = await client.delete("/members/by/hotel_id/hotel-x", headers=as_hotel)
        assert again.status_code == 200 and again.json() == {"removedMemberIds": [], "removedWorkspaceIds": []}


async def test_only_a_service_with_the_scope_may_remove(platform):
    async with platform.client() as client:
        boss = await make_admin(platform, client, "boss@z.example.com", hotel_name="Z")
        path = f"/members/by/hotel_id/{boss.hotel_id}"
        assert (await client.delete(path)).status_code == 401
        assert (await client.delete(path, headers=boss.headers)).status_code == 403
        assert (await client.delete(path, headers=await platform.service_headers("news"))).status_code == 403
        me = await client.get("/users/me", headers=boss.headers)
        assert me.status_code == 200, me.text
