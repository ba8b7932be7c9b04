"""Password reset over HTTP, with the email caught by a real SMTP server (aiosmtpd): request -> email in the
member's locale -> new password -> every old session refused -> sign-in works; the link works once; an
unknown email gets the same answer."""

from __future__ import annotations

import statistics
import time
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlparse

from aiosmtpd.controller import Controller

from roomee.auth import passwords
from tests.auth.test_sessions import _refused_everywhere, _sid
from tests.e2e.test_flow4_invitation import Mailbox
from tests.fixtures.events import event_tap
from tests.fixtures.people import PASSWORD, Person, make_admin
from tests.fixtures.platform import free_port, make_settings, running_platform, sign_in
from tests.notification.support import SocketInbox, eventually

NEW_PASSWORD = "a brand new passphrase"


@asynccontextmanager
async def platform_with_mailbox(tmp_path):
    """The platform sending email over SMTP to an aiosmtpd server of the test's own."""
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        settings = make_settings(tmp_path, email_backend="smtp", smtp_host="127.0.0.1", smtp_port=smtp.port,
                                 email_from="Roomee <no-reply@roomee.example.com>")
        async with running_platform(settings) as running:
            yield running, mailbox
    finally:
        smtp.stop()


async def mail_to(mailbox: Mailbox, address: str, subject: str):
    async def arrived():
        return next((m for m in mailbox.to(address) if m["Subject"] == subject), None)

    return await eventually(arrived, timeout=15)


def link_line(mail) -> str:
    """The one line of the text part that is a link (the whole line: copied as it is, it works)."""
    text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    [line] = [line for line in text.split("\n") if line.startswith("http")]
    assert line.strip() == line and " " not in line
    return line


def token_of(link: str) -> str:
    return parse_qs(urlparse(link).query)["token"][0]


async def test_reset_by_email_ends_every_session_and_the_link_works_once(tmp_path):
    async with platform_with_mailbox(tmp_path) as (running, mailbox), running.client() as client:
        admin = await make_admin(running, client, "admin@example.com")
        bystander = await make_admin(running, client, "bystander@example.com", hotel_name="Hotel Other")
        # The member reads English; the workspace is French.
        english = await client.patch(f"/members/{admin.member_id}", json={"locale": "en"}, headers=admin.headers)
        assert english.status_code == 200, english.text
        other = Person(admin.email, PASSWORD, await sign_in(client, admin.email, PASSWORD))
        socket = await SocketInbox("session:ended").connect(running, other)
        try:
            asked = await client.post("/users/password/forgot", json={"email": "Admin@Example.com"})
            unknown = await client.post("/users/password/forgot", json={"email": "nobody@example.com"})
            assert asked.status_code == unknown.status_code == 202
            assert asked.json() == unknown.json() == passwords.FORGOT_ANSWER

            mail = await mail_to(mailbox, "admin@example.com", "Choose a new Roomee password")
            assert mail["From"] == "Roomee <no-reply@roomee.example.com>"
            link = link_line(mail)
            assert link.startswith(f"{running.url}/reset-password?token=")
            assert f'href="{link}"' in mail.get_body(("html",)).get_content()
            assert "Hello Ada Admin" in mail.get_body(("plain",)).get_content()

            reset = await client.post("/users/password/reset", json={"token": token_of(link), "password": NEW_PASSWORD})
            assert reset.status_code == 204, reset.text

            # Every session of the account: refresh tokens at once, access tokens and sockets on every target.
            for person in (admin, other):
                refused = await client.post("/users/refresh", json={"refreshToken": person.session["refreshToken"]})
                assert refused.status_code == 401 and refused.json()["error"] == "session_revoked"
                await eventually(lambda: _refused_everywhere(client, person), timeout=15)
            assert (await socket.wait("session:ended"))["reason"] == "session ended"
            # Another account is not concerned.
            assert (await client.get("/members/", headers=bystander.headers)).status_code == 200

            old = await client.post("/users/signIn", json={"email": admin.email, "password": PASSWORD})
            assert old.status_code == 401
            new = await sign_in(client, admin.email, NEW_PASSWORD)
            assert _sid(new) not in (_sid(admin.session), _sid(other.session))
            assert (await client.get("/users/me", headers={"Authorization": f"Bearer {new['accessToken']}"})).status_code == 200

            # The link works once.
            reused = await client.post("/users/password/reset", json={"token": token_of(link), "password": PASSWORD})
            assert reused.status_code == 410 and reused.json()["error"] == "reset_token_used"
            assert (await client.post("/users/signIn", json={"email": admin.email, "password": PASSWORD})).status_code == 401

            # The owner is told, in English too; the unknown address got nothing.
            notice = await mail_to(mailbox, "admin@example.com", "Your Roomee password was changed")
            assert "with a reset link" in notice.get_body(("plain",)).get_content()
            assert mailbox.to("nobody@example.com") == []
        finally:
            await socket.close()


async def test_reset_email_in_the_workspace_locale_and_a_newer_reset_voids_older_links(tmp_path):
    async with platform_with_mailbox(tmp_path) as (running, mailbox), running.client() as client:
        admin = await make_admin(running, client, "admin@example.com")
        for _ in range(2):
            assert (await client.post("/users/password/forgot", json={"email": admin.email})).status_code == 202

        async def both():
            mails = [m for m in mailbox.to(admin.email) if m["Subject"] == "Choisissez un nouveau mot de passe Roomee"]
            return len(mails) == 2 and mails

        first, second = await eventually(both, timeout=15)
        assert "Bonjour Ada Admin" in first.get_body(("plain",)).get_content()
        links = {link_line(first), link_line(second)}
        assert len(links) == 2
        used, older = sorted(links)
        assert (await client.post("/users/password/reset",
                                  json={"token": token_of(used), "password": NEW_PASSWORD})).status_code == 204
        voided = await client.post("/users/password/reset", json={"token": token_of(older), "password": PASSWORD})
        assert voided.status_code == 410 and voided.json()["error"] == "reset_token_used"
        notice = await mail_to(mailbox, admin.email, "Votre mot de passe Roomee a été modifié")
        assert "par un lien de réinitialisation" in notice.get_body(("plain",)).get_content()


async def test_reset_bad_input_expiry_and_throttles(platform, monkeypatch):
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        invalid = await client.post("/users/password/reset", json={"token": "x" * 43, "password": NEW_PASSWORD})
        assert invalid.status_code == 404 and invalid.json()["error"] == "invalid_reset_token"
        for body in ({"token": "x" * 43, "password": "short"}, {"token": "not a token!", "password": NEW_PASSWORD},
                     {"token": "x" * 43}, {}):
            response = await client.post("/users/password/reset", json=body)
            assert response.status_code == 422 and response.json()["error"] == "validation_error", body
        for body in ({"email": "not-an-email"}, {}):
            response = await client.post("/users/password/forgot", json=body)
            assert response.status_code == 422 and response.json()["error"] == "validation_error", body

        # An expired link.
        monkeypatch.setattr(passwords, "RESET_LINK_SECONDS", 0)
        assert (await client.post("/users/password/forgot", json={"email": admin.email})).status_code == 202
        event = await tap.wait_for("roomee.notification.user.password_reset")
        assert set(event["channels"]) == {"email"} and event["metadata"]["receiverIds"] == []
        expired = await client.post("/users/password/reset",
                                    json={"token": token_of(event["payload"]["resetLink"]), "password": NEW_PASSWORD})
        assert expired.status_code == 410 and expired.json()["error"] == "reset_token_expired"
        assert (await client.get("/users/me", headers=admin.headers)).status_code == 200

        # Per email and address: the third request above the limit is refused, known email or not, with
        # the same answer; another email from the same address is still answered.
        for email in (admin.email, "nobody@example.com"):
            answers = [await client.post("/users/password/forgot", json={"email": email})
                       for _ in range(passwords.RESET_MAX_PER_EMAIL_AND_ADDRESS + 1)]
            statuses = [a.status_code for a in answers]
            assert statuses.count(429) >= 1 and statuses[-1] == 429, (email, statuses)
            assert answers[-1].json()["error"] == "reset_throttled"
            assert int(answers[-1].headers["retry-after"]) > 0
        assert (await client.post("/users/password/forgot", json={"email": "third@example.com"})).status_code == 202
        # Per address, whatever the email.
        statuses = [(await client.post("/users/password/forgot", json={"email": f"n{i}@example.com"})).status_code
                    for i in range(passwords.RESET_MAX_PER_ADDRESS)]
        assert statuses[-1] == 429 and statuses[0] == 202


async def test_forgot_answers_known_and_unknown_emails_alike(platform):
    """Same status, body and headers; the time of each is printed (run with -s): one class, no oracle."""
    async with platform.client() as client:
        await make_admin(platform, client, "admin@example.com")
        times: dict[str, list[float]] = {"known": [], "unknown": []}
        answers = {}
        for round_ in range(passwords.RESET_MAX_PER_EMAIL_AND_ADDRESS):
            for kind, email in (("known", "admin@example.com"), ("unknown", "nobody@example.com")):
                started = time.perf_counter()
                response = await client.post("/users/password/forgot", json={"email": email})
                times[kind].append(time.perf_counter() - started)
                answers[kind] = (response.status_code, response.json(),
                                 {k: v for k, v in response.headers.items() if k not in ("date", "x-request-id")})
        assert answers["known"] == answers["unknown"]
        print(f"\nforgot: known email median {statistics.median(times['known']) * 1000:.1f} ms, "
              f"unknown {statistics.median(times['unknown']) * 1000:.1f} ms")
