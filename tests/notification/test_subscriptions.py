"""Device registrations are no oracle: registering a push device id another hotel's member holds
answers exactly as registering one nobody holds, and takes nothing from that member."""

from __future__ import annotations

from roomee.notification.processor import notification_id_for
from tests.fixtures.people import make_admin
from tests.notification.support import event, eventually, publish, pushed_to, register_device, team_platform, wait_directory


def _shape(response) -> tuple:
    body = response.json()
    return response.status_code, sorted(body), {key: type(value).__name__ for key, value in body.items()}


async def test_a_foreign_device_id_is_answered_as_an_unknown_one_and_stays_its_owners(tmp_path):
    async with team_platform(tmp_path, members=1) as team:
        client, ada, bob = team.client, team.admin, team.members[0]
        eve = await make_admin(team.running, client, "eve@other.example.com", hotel_name="Other Hotel")
        await wait_directory(team.running, [eve])
        await register_device(client, bob, "bob-phone")

        def register(subscription_id: str):
            return client.post("/api/v1/subscriptions", headers=eve.headers, json={
                "workspaceId": eve.workspace_id, "platform": "ios", "subscriptionId": subscription_id})

        foreign, unknown = await register("bob-phone"), await register("never-seen-phone")
        assert foreign.status_code == 201, foreign.text
        assert _shape(foreign) == _shape(unknown)
        assert foreign.json()["memberId"] == eve.member_id and foreign.json()["workspaceId"] == eve.workspace_id
        # Again: both are now Eve's own registrations, updated alike.
        assert _shape(await register("bob-phone")) == _shape(await register("never-seen-phone"))
        assert (await register("bob-phone")).status_code == 200

        # Bob's registration is untouched, and his pushes still reach his device only.
        [device] = (await client.get("/api/v1/subscriptions", headers=bob.headers)).json()
        assert (device["subscriptionId"], device["memberId"], device["workspaceId"]) == (
            "bob-phone", bob.member_id, bob.workspace_id)
        page = event(ada, [bob])
        await publish(team.running, page)
        async def pushed():
            return pushed_to(team.onesignal, notification_id_for(page["id"]))

        assert await eventually(pushed) == ["bob-phone"]
        # Eve unregistering hers leaves Bob's.
        assert (await client.delete("/api/v1/subscriptions/bob-phone", headers=eve.headers)).status_code == 204
        assert [d["subscriptionId"] for d in (await client.get("/api/v1/subscriptions", headers=bob.headers)).json()] == [
            "bob-phone"]


async def test_re_registering_is_documented_as_200_and_a_new_device_as_201(tmp_path):
    async with team_platform(tmp_path, members=0) as team:
        document = (await team.client.get("/openapi/notification.json")).json()
        responses = document["paths"]["/api/v1/subscriptions"]["post"]["responses"]
        for status in ("200", "201"):
            assert responses[status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/SubscriptionOut"}, status
        assert "409" not in responses
