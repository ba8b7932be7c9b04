"""Password change over HTTP: the current password required; every other session ends on every target, the
caller's goes on with fresh tokens; the owner is told by email (real SMTP)."""

from __future__ import annotations

from tests.auth.test_password_reset import NEW_PASSWORD, mail_to, platform_with_mailbox
from tests.auth.test_sessions import _answers, _refused_everywhere, _sid
from tests.fixtures.people import PASSWORD, Person, make_admin
from tests.fixtures.platform import sign_in
from tests.notification.support import SocketInbox, eventually


async def test_change_ends_the_other_sessions_and_renews_this_one(tmp_path):
    async with platform_with_mailbox(tmp_path) as (running, mailbox), running.client() as client:
        admin = await make_admin(running, client, "admin@example.com")
        other = Person(admin.email, PASSWORD, await sign_in(client, admin.email, PASSWORD))
        socket = await SocketInbox("session:ended").connect(running, other)
        try:
            changed = await client.post("/users/password/change", headers=admin.headers,
                                        json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})
            assert changed.status_code == 200, changed.text
            renewed = Person(admin.email, NEW_PASSWORD, changed.json())
            assert _sid(renewed.session) == _sid(admin.session)
            assert renewed.session["member"]["memberId"] == admin.member_id

            # The other session: everywhere, its refresh token, its socket.
            await eventually(lambda: _refused_everywhere(client, other), timeout=15)
            refused = await client.post("/users/refresh", json={"refreshToken": other.session["refreshToken"]})
            assert refused.status_code == 401 and refused.json()["error"] == "session_revoked"
            assert (await socket.wait("session:ended"))["reason"] == "session ended"
            # This session: the new tokens work everywhere; the refresh token from before is spent.
            assert {status for status, _ in (await _answers(client, renewed)).values()} == {200}
            spent = await client.post("/users/refresh", json={"refreshToken": admin.session["refreshToken"]})
            assert spent.status_code == 401
            again = await client.post("/users/refresh", json={"refreshToken": renewed.session["refreshToken"]})
            assert again.status_code == 200 and _sid(again.json()) == _sid(admin.session)

            assert (await client.post("/users/signIn", json={"email": admin.email, "password": PASSWORD})).status_code == 401
            await sign_in(client, admin.email, NEW_PASSWORD)
            notice = await mail_to(mailbox, admin.email, "Votre mot de passe Roomee a été modifié")
            text = notice.get_body(("plain",)).get_content()
            assert "Vos autres sessions ont été fermées" in text and "réinitialisation" not in text
        finally:
            await socket.close()


async def test_change_refusals_and_throttle(platform):
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        body = {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
        assert (await client.post("/users/password/change", json=body)).status_code == 401
        service = await client.post("/users/password/change", json=body, headers=await platform.service_headers("news"))
        assert service.status_code == 403
        for bad in ({"currentPassword": PASSWORD, "newPassword": "short"}, {"currentPassword": PASSWORD},
                    {"newPassword": NEW_PASSWORD}, {"currentPassword": "", "newPassword": NEW_PASSWORD}):
            response = await client.post("/users/password/change", json=bad, headers=admin.headers)
            assert response.status_code == 422 and response.json()["error"] == "validation_error", bad

        wrong = {"currentPassword": "not the password", "newPassword": NEW_PASSWORD}
        refused = await client.post("/users/password/change", json=wrong, headers=admin.headers)
        assert refused.status_code == 403 and refused.json()["error"] == "invalid_current_password"
        # Nothing changed, nothing ended.
        assert (await client.get("/users/me", headers=admin.headers)).status_code == 200
        await sign_in(client, admin.email, PASSWORD)
        # Wrong current passwords are guesses: throttled like failed sign-ins of the account from this address.
        statuses = [(await client.post("/users/password/change", json=wrong, headers=admin.headers)).status_code
                    for _ in range(platform.settings.login_max_failures + 1)]
        assert statuses == [403] * platform.settings.login_max_failures + [429], statuses
        throttled = await client.post("/users/password/change", json=body, headers=admin.headers)
        assert throttled.status_code == 429 and throttled.json()["error"] == "login_throttled"
        assert int(throttled.headers["retry-after"]) > 0


async def test_a_change_from_an_ended_session_is_refused(platform):
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        assert (await client.post("/users/signOut", headers=admin.headers)).status_code == 204
        # Before and after every process has learnt the sign-out: never a new password from an ended session.
        response = await client.post("/users/password/change", headers=admin.headers,
                                     json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})
        assert response.status_code == 401 and response.json()["error"] in ("session_revoked", "token_revoked")
        await sign_in(client, admin.email, PASSWORD)
