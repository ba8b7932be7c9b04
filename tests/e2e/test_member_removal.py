"""A removed member (or one whose role changed) loses access on every service within a poll interval,
and their Socket.IO connections close; a connection also closes when its token expires."""

from __future__ import annotations

from tests.fixtures.events import event_tap
from tests.fixtures.people import Person, invite_and_join, make_admin
from tests.fixtures.platform import free_port, make_settings, running_platform
from tests.notification.support import SocketInbox, eventually

# One read route of each service a member token opens, and a write (push device registration).
MEMBER_ROUTES = [("GET", "/members/"), ("GET", "/workspaces"), ("GET", "/users/me"),
                 ("GET", "/api/v1/notifications"), ("GET", "/api/v1/preferences")]


def _device(person: Person) -> dict:
    return {"workspaceId": person.workspace_id, "platform": "ios", "subscriptionId": f"dev-{person.member_id}"}


async def _statuses(client, person: Person, routes=MEMBER_ROUTES) -> dict:
    answers = {}
    for method, path in routes:
        response = await client.request(method, path, headers=person.headers)
        answers[path] = (response.status_code, response.json().get("error") if response.status_code >= 400 else None)
    device = await client.post("/api/v1/subscriptions", json=_device(person), headers=person.headers)
    answers["POST /api/v1/subscriptions"] = (device.status_code, device.json().get("error"))
    return answers


async def test_a_removed_member_is_refused_everywhere_and_disconnected(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        member = await invite_and_join(client, tap, admin, "leaving@example.com")
        assert {status for status, _ in (await _statuses(client, member)).values()} <= {200, 201}
        socket = await SocketInbox("session:ended").connect(platform, member)
        try:
            assert (await client.delete(f"/members/{member.member_id}", headers=admin.headers)).status_code == 204

            async def refused_everywhere():
                answers = await _statuses(client, member)
                return all(answer == (401, "token_revoked") for answer in answers.values()) and answers

            await eventually(refused_everywhere, timeout=15)
            ended = await socket.wait("session:ended")
            assert ended["reason"] == "membership removed or permissions changed"
            await eventually(lambda: _async(not socket.client.connected))
            # Everyone else keeps working.
            assert (await client.get("/members/", headers=admin.headers)).status_code == 200
        finally:
            await socket.close()


async def test_a_role_change_refuses_the_old_token_and_a_refresh_carries_the_new_role(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        member = await invite_and_join(client, tap, admin, "promoted@example.com")
        changed = await client.patch(f"/members/{member.member_id}", json={"role": "manager"}, headers=admin.headers)
        assert changed.status_code == 200

        async def refused():
            response = await client.get("/api/v1/notifications", headers=member.headers)
            return response.status_code == 401 and response.json()["error"] == "token_revoked"

        await eventually(refused, timeout=15)
        renewed = await client.post("/users/refresh", json={"refreshToken": member.session["refreshToken"]})
        assert renewed.status_code == 200
        assert renewed.json()["member"]["permissions"] == ["manage_members", "publish_pages"]
        again = Person(member.email, member.password, renewed.json())
        assert {status for status, _ in (await _statuses(client, again)).values()} <= {200, 201}


async def test_separate_processes_learn_the_removal(tmp_path):
    """auth+members in one process, notification in another: the notification process refuses too."""
    first = make_settings(tmp_path)
    port = free_port()
    second = first.model_copy(update={"port": port, "public_url": f"http://127.0.0.1:{port}",
                                      "auth_url": first.base_url, "members_url": first.base_url})
    async with running_platform(first, "auth,members") as core, running_platform(second, "notification") as notif:
        async with core.client() as client, notif.client() as notifications, event_tap(core) as tap:
            admin = await make_admin(core, client, "admin@example.com")
            member = await invite_and_join(client, tap, admin, "leaving@example.com")
            assert (await notifications.get("/api/v1/notifications", headers=member.headers)).status_code == 200
            assert (await client.delete(f"/members/{member.member_id}", headers=admin.headers)).status_code == 204

            async def refused():
                response = await notifications.get("/api/v1/notifications", headers=member.headers)
                return response.status_code == 401 and response.json()["error"] == "token_revoked"

            await eventually(refused, timeout=15)
            assert (await notifications.get("/api/v1/notifications", headers=admin.headers)).status_code == 200


async def test_a_socket_closes_when_its_token_expires(tmp_path):
    async with running_platform(make_settings(tmp_path, access_token_ttl_seconds=3)) as running:
        async with running.client() as client:
            admin = await make_admin(running, client, "admin@example.com")
            socket = await SocketInbox("session:ended").connect(running, admin)
            try:
                ended = await socket.wait("session:ended", timeout=15)
                assert ended["reason"] == "token expired"
                await eventually(lambda: _async(not socket.client.connected))
            finally:
                await socket.close()


async def _async(value):
    return value
