"""Sessions: sign-out ends a session on every service (its access token refused, its refresh token refused,
its sockets closed) through the feed every process follows; the other sessions of the account go on."""

from __future__ import annotations

import statistics
import time

import jwt

from tests.fixtures.people import PASSWORD, Person, make_admin
from tests.fixtures.platform import free_port, make_settings, running_platform, sign_in
from tests.notification.support import SocketInbox, eventually

# One member route of each target in the platform (auth, members, news, notification, media), read-only.
MEMBER_ROUTES = [("GET", "/users/me"), ("GET", "/members/"), ("GET", "/workspaces"), ("GET", "/api/v1/pages"),
                 ("GET", "/api/v1/notifications"), ("GET", "/api/v1/preferences"), ("GET", "/media")]


def _sid(session: dict) -> str:
    return jwt.decode(session["accessToken"], options={"verify_signature": False})["sid"]


async def _answers(client, person: Person) -> dict[str, tuple[int, str | None]]:
    answers = {}
    for method, path in MEMBER_ROUTES:
        response = await client.request(method, path, headers=person.headers)
        answers[path] = (response.status_code, response.json().get("error") if response.status_code >= 400 else None)
    return answers


async def _refused_everywhere(client, person: Person):
    answers = await _answers(client, person)
    return all(answer == (401, "token_revoked") for answer in answers.values()) and answers


async def test_sign_out_ends_the_session_everywhere_and_closes_its_socket(platform):
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        other = Person(admin.email, PASSWORD, await sign_in(client, admin.email, PASSWORD))
        assert _sid(admin.session) != _sid(other.session)
        before = await _answers(client, admin)
        assert {status for status, _ in before.values()} == {200}, before
        socket = await SocketInbox("session:ended").connect(platform, admin)
        other_socket = await SocketInbox("session:ended").connect(platform, other)
        try:
            signed_out = await client.post("/users/signOut", headers=admin.headers)
            assert signed_out.status_code == 204, signed_out.text

            # The refresh token dies at once, with its own code.
            refused = await client.post("/users/refresh", json={"refreshToken": admin.session["refreshToken"]})
            assert refused.status_code == 401 and refused.json()["error"] == "session_revoked", refused.text
            # The access token on every target, and the socket.
            answers = await eventually(lambda: _refused_everywhere(client, admin), timeout=15)
            assert {path for path in answers} == {path for _, path in MEMBER_ROUTES}
            ended = await socket.wait("session:ended")
            assert ended["reason"] == "session ended"
            await eventually(lambda: _value(not socket.client.connected))
            # Signing out again with the ended token: it is refused like anywhere else.
            again = await client.post("/users/signOut", headers=admin.headers)
            assert again.status_code == 401 and again.json()["error"] == "token_revoked"

            # The account's other session goes on: its token, its refresh, its socket.
            assert {status for status, _ in (await _answers(client, other)).values()} == {200}
            assert other_socket.client.connected and other_socket.received["session:ended"] == []
            renewed = await client.post("/users/refresh", json={"refreshToken": other.session["refreshToken"]})
            assert renewed.status_code == 200 and _sid(renewed.json()) == _sid(other.session)
        finally:
            await socket.close()
            await other_socket.close()


async def test_sign_out_with_the_refresh_token_ends_the_access_token_too(platform):
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        # A refreshed and a workspace-switched token stay in the session that sign-out ends.
        renewed = (await client.post("/users/refresh", json={"refreshToken": admin.session["refreshToken"]})).json()
        switched = await client.post("/users/switch-workspace", json={"workspaceId": admin.workspace_id},
                                     headers={"Authorization": f"Bearer {renewed['accessToken']}"})
        assert switched.status_code == 200
        assert _sid(renewed) == _sid(switched.json()) == _sid(admin.session)
        person = Person(admin.email, PASSWORD, switched.json())

        signed_out = await client.post("/users/signOut", json={"refreshToken": switched.json()["refreshToken"]})
        assert signed_out.status_code == 204
        await eventually(lambda: _refused_everywhere(client, person), timeout=15)
        # Every refresh token of the session is refused: the switched one and the renewed one.
        for token in (switched.json()["refreshToken"], renewed["refreshToken"]):
            refused = await client.post("/users/refresh", json={"refreshToken": token})
            assert refused.status_code == 401 and refused.json()["error"] == "session_revoked"
        # An ended session cannot be switched or refreshed back to life.
        revived = await client.post("/users/switch-workspace", json={"workspaceId": admin.workspace_id},
                                    headers={"Authorization": f"Bearer {renewed['accessToken']}"})
        assert revived.status_code == 401


async def test_sign_out_bad_input(platform):
    async with platform.client() as client:
        await make_admin(platform, client, "admin@example.com")
        nothing = await client.post("/users/signOut")
        assert nothing.status_code == 401 and nothing.json()["error"] == "unauthorized"
        empty = await client.post("/users/signOut", json={})
        assert empty.status_code == 401 and empty.json()["error"] == "unauthorized"
        # An unknown refresh token: nothing to end, same answer as a known one (no oracle).
        unknown = await client.post("/users/signOut", json={"refreshToken": "x" * 43})
        assert unknown.status_code == 204
        too_short = await client.post("/users/signOut", json={"refreshToken": "short"})
        assert too_short.status_code == 422
        forged = await client.post("/users/signOut", headers={"Authorization": "Bearer not-a-token"})
        assert forged.status_code == 401 and forged.json()["error"] == "invalid_token"
        service = await client.post("/users/signOut", headers=await platform.service_headers("news"))
        assert service.status_code == 403


async def test_the_feed_is_for_platform_services_only(platform):
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        assert (await client.get("/users/sessions/revocations")).status_code == 401
        as_member = await client.get("/users/sessions/revocations", headers=admin.headers)
        assert as_member.status_code == 403
        # The CLI client follows no feed: it has no such scope.
        as_cli = await client.get("/users/sessions/revocations", headers=await platform.service_headers("cli"))
        assert as_cli.status_code == 403 and as_cli.json()["error"] == "insufficient_scope"
        headers = await platform.service_headers("news")
        start = (await client.get("/users/sessions/revocations", headers=headers)).json()
        assert (await client.post("/users/signOut", headers=admin.headers)).status_code == 204
        feed = await client.get("/users/sessions/revocations", params={"after": start["position"]}, headers=headers)
        assert feed.status_code == 200
        [item] = feed.json()["items"]
        assert item["sessionId"] == _sid(admin.session)
        assert item["revokedAt"].endswith("Z") or item["revokedAt"].endswith("+00:00")
        assert feed.json()["position"] > start["position"]
        later = await client.get("/users/sessions/revocations", params={"after": feed.json()["position"]},
                                 headers=headers)
        assert later.json()["items"] == [] and later.json()["position"] == feed.json()["position"]
        bad = await client.get("/users/sessions/revocations", params={"after": -1}, headers=headers)
        assert bad.status_code == 422


async def test_a_separate_process_learns_the_sign_out(tmp_path):
    """auth+members in one process, notification in another: the notification process refuses too, and
    closes the session's socket."""
    first = make_settings(tmp_path)
    port = free_port()
    second = first.model_copy(update={"port": port, "public_url": f"http://127.0.0.1:{port}",
                                      "auth_url": first.base_url, "members_url": first.base_url})
    async with running_platform(first, "auth,members") as core, running_platform(second, "notification") as notif:
        async with core.client() as client, notif.client() as notifications:
            admin = await make_admin(core, client, "admin@example.com")
            assert (await notifications.get("/api/v1/notifications", headers=admin.headers)).status_code == 200
            socket = await SocketInbox("session:ended").connect(notif, admin)
            try:
                assert (await client.post("/users/signOut", headers=admin.headers)).status_code == 204

                async def refused():
                    response = await notifications.get("/api/v1/notifications", headers=admin.headers)
                    return response.status_code == 401 and response.json()["error"] == "token_revoked"

                await eventually(refused, timeout=15)
                assert (await socket.wait("session:ended"))["reason"] == "session ended"
            finally:
                await socket.close()


async def test_revocation_delay(platform):
    """How long after sign-out answers an ended access token is refused by another target (notification),
    over a few sign-outs: printed (run with -s), bounded only by the generous wait of `eventually`."""
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        delays = []
        for _ in range(5):
            person = Person(admin.email, PASSWORD, await sign_in(client, admin.email, PASSWORD))
            assert (await client.get("/api/v1/notifications", headers=person.headers)).status_code == 200
            assert (await client.post("/users/signOut", headers=person.headers)).status_code == 204
            ended = time.monotonic()

            async def refused():
                response = await client.get("/api/v1/notifications", headers=person.headers)
                return response.status_code == 401

            await eventually(refused, timeout=15, interval=0.01)
            delays.append(time.monotonic() - ended)
        print(f"\nrevocation delay after sign-out (poll {platform.settings.access_changes_poll_seconds} s): "
              f"median {statistics.median(delays):.3f} s, max {max(delays):.3f} s, "
              f"all {[round(d, 3) for d in delays]}")


async def _value(value):
    return value
