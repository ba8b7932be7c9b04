"""Members service routes: pagination, updates, removal, workspaces, service routes, sync."""

from __future__ import annotations

import httpx

from roomee.kit.auth import SERVICE_SCOPES

from tests.fixtures.events import event_tap
from tests.fixtures.people import PASSWORD, invite_and_join, make_admin


async def service_headers(platform) -> dict[str, str]:
    """A service token holding every members scope (these tests are about the routes, not the scopes)."""
    scopes = {scope for granted in SERVICE_SCOPES.values() for scope in granted if scope.startswith("members:")}
    token = platform.platform.services["auth"].state["issuer"].service_token("test", tuple(scopes))
    return {"Authorization": f"Bearer {token}"}


async def test_pagination_update_remove_and_events(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        joined = [await invite_and_join(client, tap, admin, f"m{i}@example.com") for i in range(4)]

        seen, cursor = [], None
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (await client.get("/members/", params=params, headers=admin.headers)).json()
            seen += [m["email"] for m in page["items"]]
            cursor = page["nextCursor"]
            if not cursor:
                break
        assert seen == ["admin@example.com"] + [f"m{i}@example.com" for i in range(4)]
        assert (await client.get("/members/", params={"cursor": "garbage!"}, headers=admin.headers)).status_code == 422
        assert (await client.get("/members/", params={"limit": 0}, headers=admin.headers)).status_code == 422

        target = joined[0]
        updated = await client.patch(f"/members/{target.member_id}", json={"role": "manager"}, headers=admin.headers)
        assert updated.status_code == 200
        assert updated.json()["permissions"] == ["manage_members", "publish_pages"]
        event = await tap.wait_for("roomee.notification.member.updated",
                                   lambda e: e["payload"]["member"]["id"] == target.member_id and "role" in e["payload"]["changes"])
        assert event["payload"]["member"]["role"] == "manager"

        removed = await client.delete(f"/members/{joined[1].member_id}", headers=admin.headers)
        assert removed.status_code == 204
        await tap.wait_for("roomee.notification.member.deleted",
                           lambda e: e["payload"]["member"]["id"] == joined[1].member_id)
        assert (await client.get(f"/members/{joined[1].member_id}", headers=admin.headers)).status_code == 404
        # A removed member can no longer sign in to that workspace...
        gone = await client.post("/users/signIn", json={"email": "m1@example.com", "password": PASSWORD})
        assert gone.status_code == 403 and gone.json()["error"] == "no_membership"
        # ...and can be invited again: the account exists, so the membership is made at once (no sign-up).
        back = await client.post("/members/", json={"email": "m1@example.com"}, headers=admin.headers)
        assert back.status_code == 201, back.text
        assert back.json()["status"] == "added" and back.json()["memberId"] != joined[1].member_id
        again = await client.post("/users/signIn", json={"email": "m1@example.com", "password": PASSWORD})
        assert again.status_code == 200 and again.json()["member"]["memberId"] == back.json()["memberId"]


async def test_workspaces_and_switching(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        created = await client.post("/workspaces", json={"name": "Restaurant", "locale": "en", "timezone": "Europe/London"},
                                    headers=admin.headers)
        assert created.status_code == 201, created.text
        spa = created.json()
        event = await tap.wait_for("roomee.notification.workspace.created", lambda e: e["payload"]["id"] == spa["id"])
        assert event["workspaceName"] == "Restaurant" and event["ecosystemId"] == admin.hotel_id

        names = {w["name"] for w in (await client.get("/workspaces", headers=admin.headers)).json()}
        assert names == {"Hotel Test", "Restaurant"}

        switched = await client.post("/users/switch-workspace", json={"workspaceId": spa["id"]}, headers=admin.headers)
        assert switched.status_code == 200, switched.text
        assert switched.json()["member"]["workspaceId"] == spa["id"]
        assert {m["workspaceName"] for m in switched.json()["memberships"]} == {"Hotel Test", "Restaurant"}
        in_spa = {"Authorization": f"Bearer {switched.json()['accessToken']}"}
        assert [m["email"] for m in (await client.get("/members/", headers=in_spa)).json()["items"]] == ["admin@example.com"]

        renamed = await client.patch(f"/workspaces/{spa['id']}", json={"name": "Brasserie"}, headers=in_spa)
        assert renamed.status_code == 200 and renamed.json()["name"] == "Brasserie"
        assert (await client.patch(f"/workspaces/{spa['id']}", json={"locale": "english"}, headers=in_spa)).status_code == 422

        stranger = await client.post("/users/switch-workspace", json={"workspaceId": "nope"}, headers=admin.headers)
        assert stranger.status_code == 403

        deleted = await client.delete(f"/workspaces/{spa['id']}", headers=admin.headers)
        assert deleted.status_code == 204
        await tap.wait_for("roomee.notification.workspace.deleted", lambda e: e["payload"]["id"] == spa["id"])
        assert (await client.get(f"/workspaces/{spa['id']}", headers=admin.headers)).status_code == 404


async def test_service_routes_hotel_member_and_sync(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        headers = await service_headers(platform)
        body = {"hotelId": "hotel-42", "hotelName": "Grand Hotel", "email": "Boss@Grand.example.com",
                "firstName": "Bo", "lastName": "Ss", "dashboardAccess": True, "isAdmin": True}
        first = await client.post("/members/add/hotel/member", json=body, headers=headers)
        assert first.status_code == 201, first.text
        again = await client.post("/members/add/hotel/member", json=body, headers=headers)
        assert again.json()["member"]["id"] == first.json()["member"]["id"]  # idempotent by hotel + email
        assert again.json()["workspace"]["id"] == first.json()["workspace"]["id"]
        member = first.json()["member"]
        assert member["isAdmin"] and member["dashboardAccess"] and member["role"] == "admin"
        assert member["ecosystemId"] == "hotel-42" and member["userId"] is None

        signed_up = await client.post("/users/signUp", json={"token": again.json()["invitationToken"], "password": PASSWORD})
        assert signed_up.status_code == 201
        assert signed_up.json()["member"]["memberId"] == member["id"]
        after = await client.post("/members/add/hotel/member", json=body, headers=headers)
        assert after.json()["invitationToken"] is None and after.json()["member"]["userId"] is not None

        by_hotel = await client.get("/members/get/by/hotel_id/hotel-42", headers=headers)
        assert [m["email"] for m in by_hotel.json()["items"]] == ["boss@grand.example.com"]
        with_email = await client.get("/members/get/with/boss@grand.example.com", headers=headers)
        assert [p["workspaceName"] for p in with_email.json()] == ["Grand Hotel"]

        cursor, changed = None, []
        for _ in range(10):
            page = (await client.post("/members/sync", json={"cursor": cursor, "limit": 1}, headers=headers)).json()
            changed += page["items"]
            if not page["items"]:
                break
            cursor = page["nextCursor"]
        assert [m["email"] for m in changed] == ["boss@grand.example.com"]
        assert (changed[0]["workspaceName"], changed[0]["workspaceLocale"], changed[0]["workspaceTimezone"]) == (
            "Grand Hotel", "fr", "Europe/Paris")
        assert (await client.post("/members/sync", json={"cursor": cursor}, headers=headers)).json()["items"] == []

        admin_session = signed_up.json()
        removed_colleague = await client.post("/members/add/hotel/member",
                                              json={**body, "email": "temp@grand.example.com", "isAdmin": False},
                                              headers=headers)
        await client.delete(f"/members/{removed_colleague.json()['member']['id']}",
                            headers={"Authorization": f"Bearer {admin_session['accessToken']}"})
        page = (await client.post("/members/sync", json={"cursor": cursor}, headers=headers)).json()
        assert [(m["email"], m["deletedAt"] is not None) for m in page["items"]] == [("temp@grand.example.com", True)]

        unauthenticated = await client.post("/members/add/hotel/member", json=body)
        assert unauthenticated.status_code == 401
        invited = await tap.wait_for("roomee.notification.member.onboarding",
                                     lambda e: e["payload"]["email"] == "boss@grand.example.com")
        assert invited["channels"] == ["email", "socket"]  # the invitation email goes out

        # A caller that signs the member up itself (the platform's bootstrap) asks for no email.
        quiet = await client.post("/members/add/hotel/member", headers=headers,
                                  json={**body, "email": "night@grand.example.com", "sendInvitation": False})
        assert quiet.status_code == 201 and quiet.json()["invitationToken"]
        silent = await tap.wait_for("roomee.notification.member.onboarding",
                                    lambda e: e["payload"]["email"] == "night@grand.example.com")
        assert silent["channels"] == ["socket"]


async def test_openapi_per_service(platform):
    async with httpx.AsyncClient(base_url=platform.url) as client:
        members = (await client.get("/openapi/members.json")).json()
        assert "/members/add/hotel/member" in members["paths"]
        assert "/users/signIn" not in members["paths"]
        assert "Idempotent" in members["paths"]["/members/add/hotel/member"]["post"]["description"]
        assert "/users/signUp" in (await client.get("/openapi/auth.json")).json()["paths"]
        assert (await client.get("/openapi/nothing.json")).status_code == 404


async def test_sync_feed_pages_every_change_in_order(platform):
    async with platform.client() as client:
        headers = await service_headers(platform)
        body = {"hotelId": "hotel-7", "hotelName": "Feed Hotel", "email": "first@feed.example.com"}
        await client.post("/members/add/hotel/member", json=body, headers=headers)
        page = (await client.post("/members/sync", json={"limit": 100}, headers=headers)).json()
        cursor = page["nextCursor"]
        assert [m["email"] for m in page["items"]] == ["first@feed.example.com"]

        await client.post("/members/add/hotel/member", json={**body, "email": "second@feed.example.com"},
                          headers=headers)
        await client.post("/members/add/hotel/member", json={**body, "email": "third@feed.example.com"},
                          headers=headers)
        later = (await client.post("/members/sync", json={"cursor": cursor, "limit": 1}, headers=headers)).json()
        rest = (await client.post("/members/sync", json={"cursor": later["nextCursor"]}, headers=headers)).json()
        assert [m["email"] for m in later["items"] + rest["items"]] == ["second@feed.example.com",
                                                                         "third@feed.example.com"]
        assert rest["nextCursor"] != later["nextCursor"]
        empty = (await client.post("/members/sync", json={"cursor": rest["nextCursor"]}, headers=headers)).json()
        assert empty["items"] == [] and empty["nextCursor"] == rest["nextCursor"]
        bad = await client.post("/members/sync", json={"cursor": "WyJ4Il0"}, headers=headers)
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_cursor"


async def test_feed_positions_are_taken_in_commit_order(platform):
    """A second change waits for the first to commit, so no later reader can see position P+1
    before P exists (paging by updated_at could skip a change that commits late)."""
    import asyncio

    from roomee.members.repository import MemberRepository

    db = platform.platform.services["members"].db
    async with db.sessionmaker() as first:
        await first.begin()
        first_position = await MemberRepository(first)._next_change()

        async def second_change() -> int:
            async with db.transaction() as second:
                return await MemberRepository(second)._next_change()

        waiting = asyncio.create_task(second_change())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # held back by the uncommitted first change
        await first.commit()
    assert await asyncio.wait_for(waiting, 10) == first_position + 1
