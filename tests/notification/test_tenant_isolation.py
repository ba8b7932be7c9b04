"""Every route of the notification service acts for the caller's member in the caller's workspace:
another member's or another hotel's data is invisible (404) and untouchable."""

from __future__ import annotations

from roomee.notification.processor import notification_id_for
from tests.fixtures.people import make_admin
from tests.notification.support import (
    event,
    eventually,
    inbox,
    publish,
    register_device,
    set_preferences,
    team_platform,
    unread,
    wait_directory,
)


async def test_every_route_is_scoped_to_the_callers_member_and_workspace(tmp_path):
    async with team_platform(tmp_path, members=1) as team:
        client, ada, bob = team.client, team.admin, team.members[0]
        eve = await make_admin(team.running, client, "eve@other.example.com", hotel_name="Other Hotel")
        await wait_directory(team.running, [eve])
        await register_device(client, bob, "bob-phone")
        await set_preferences(client, bob, isGlobalSilent=False, categoryPrefs={"like": {"push": False}})

        page = event(ada, [bob])
        await publish(team.running, page)
        notification_id = notification_id_for(page["id"])
        await eventually(lambda: inbox(client, bob, unread="true"))
        bob_unread = await unread(client, bob)

        for outsider in (eve, ada):  # another hotel, and a colleague who did not receive it
            assert notification_id not in {i["id"] for i in await inbox(client, outsider, limit=100)}
            for method, path in (("GET", f"/api/v1/notifications/{notification_id}"),
                                 ("POST", f"/api/v1/notifications/{notification_id}/read")):
                response = await client.request(method, path, headers=outsider.headers)
                assert response.status_code == 404, (method, path, response.text)
                assert response.json()["error"] == "not_found"
            read_all = await client.post("/api/v1/notifications/read-all", headers=outsider.headers)
            assert read_all.status_code == 200
            assert read_all.json()["workspaceId"] == outsider.workspace_id

        # Nothing the others did touched Bob's notification or his counter.
        mine = await client.get(f"/api/v1/notifications/{notification_id}", headers=bob.headers)
        assert mine.status_code == 200 and mine.json()["readAt"] is None
        assert await unread(client, bob) == bob_unread
        counters = (await client.get("/api/v1/notifications/counters", headers=eve.headers)).json()
        assert counters == {"workspaceId": eve.workspace_id, "memberId": eve.member_id, "unread": 0}

        # Preferences are per member and workspace.
        eve_prefs = (await client.get("/api/v1/preferences", headers=eve.headers)).json()
        assert eve_prefs["memberId"] == eve.member_id and eve_prefs["categoryPrefs"]["like"]["push"] is True
        await set_preferences(client, eve, isGlobalSilent=True)
        assert (await client.get("/api/v1/preferences", headers=bob.headers)).json()["isGlobalSilent"] is False

        # Devices: registered only for one's own workspace; another account's device is neither
        # listed, removable nor takeable (tests/notification/test_subscriptions.py: nor confirmed).
        foreign = await client.post("/api/v1/subscriptions", json={"workspaceId": bob.workspace_id, "platform": "ios",
                                                                   "subscriptionId": "eve-phone"}, headers=eve.headers)
        assert foreign.status_code == 403 and foreign.json()["error"] == "workspace_mismatch"
        assert (await client.get("/api/v1/subscriptions", headers=eve.headers)).json() == []
        assert (await client.delete("/api/v1/subscriptions/bob-phone", headers=eve.headers)).status_code == 404
        assert (await client.delete("/api/v1/subscriptions/bob-phone", headers=ada.headers)).status_code == 404
        taken = await client.post("/api/v1/subscriptions", json={"workspaceId": eve.workspace_id, "platform": "ios",
                                                                 "subscriptionId": "bob-phone"}, headers=eve.headers)
        assert taken.status_code == 201 and taken.json()["memberId"] == eve.member_id
        [device] = (await client.get("/api/v1/subscriptions", headers=bob.headers)).json()
        assert (device["subscriptionId"], device["memberId"], device["workspaceId"], device["isActive"]) == (
            "bob-phone", bob.member_id, bob.workspace_id, True)

        # Recounting is for the workspace's managers, and only recounts their workspace.
        recount = await client.post("/api/v1/notifications/counters/recount", headers=eve.headers)
        assert recount.json() == {"workspaceId": eve.workspace_id, "corrected": 0}
        assert (await client.post("/api/v1/notifications/counters/recount", headers=bob.headers)).status_code == 403


async def test_devices_register_idempotently_and_bad_input_is_refused(tmp_path):
    async with team_platform(tmp_path, members=1) as team:
        client, bob = team.client, team.members[0]
        body = {"workspaceId": bob.workspace_id, "platform": "android", "subscriptionId": "bob-phone", "isActive": True}
        first = await client.post("/api/v1/subscriptions", json=body, headers=bob.headers)
        assert first.status_code == 201, first.text
        again = await client.post("/api/v1/subscriptions", json={**body, "isActive": False}, headers=bob.headers)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        assert again.json()["isActive"] is False
        for bad in ({**body, "platform": "fax"}, {**body, "subscriptionId": ""}, {"platform": "ios"},
                    {**body, "isActive": "maybe"}):
            response = await client.post("/api/v1/subscriptions", json=bad, headers=bob.headers)
            assert response.status_code == 422, (bad, response.text)
        assert (await client.delete("/api/v1/subscriptions/bob-phone", headers=bob.headers)).status_code == 204
        assert (await client.delete("/api/v1/subscriptions/bob-phone", headers=bob.headers)).status_code == 404
        assert (await client.get("/api/v1/subscriptions", headers=bob.headers)).json() == []

        bad_cursor = await client.get("/api/v1/notifications", params={"cursor": "%%%"}, headers=bob.headers)
        assert bad_cursor.status_code == 422 and bad_cursor.json()["error"] == "invalid_cursor"
        too_many = await client.get("/api/v1/notifications", params={"limit": 1000}, headers=bob.headers)
        assert too_many.status_code == 422
        unknown = await client.post("/api/v1/notifications/no-such-id/read", headers=bob.headers)
        assert unknown.status_code == 404
