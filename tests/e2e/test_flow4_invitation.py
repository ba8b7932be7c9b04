"""Seed Flow 4 end to end: the manager invites over HTTP, the invitation email reaches the invitee
over real SMTP (aiosmtpd), the manager follows it live on Socket.IO, the invitee signs up with the
link from the email, and the manager is notified of ``member.registered``."""

from __future__ import annotations

import asyncio
import json
import re
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

from aiosmtpd.controller import Controller

from roomee.notification.channels import NOTIFICATION_NEW, UNREAD_COUNTERS
from tests.fixtures.people import PASSWORD, Person, make_admin, token_from_link
from tests.fixtures.platform import free_port, make_settings, running_platform, sign_in
from tests.notification.support import SocketInbox, eventually, inbox, unread


class Mailbox:
    """An SMTP server (aiosmtpd) keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        message = message_from_bytes(envelope.content, policy=default_policy)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in m["X-Envelope-To"]]


async def test_invitation_email_manager_socket_sign_up_and_registration_notice(tmp_path):
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        settings = make_settings(tmp_path, email_backend="smtp", smtp_host="127.0.0.1", smtp_port=smtp.port,
                                 email_from="Roomee <no-reply@roomee.example.com>")
        async with running_platform(settings) as running, running.client() as client:
            manager = await make_admin(running, client, "manager@hotel.example.com")
            socket = await SocketInbox(NOTIFICATION_NEW, UNREAD_COUNTERS).connect(running, manager)
            try:
                invited = await client.post(
                    "/members/", json={"email": "nina@hotel.example.com", "firstName": "Nina", "lastName": "New"},
                    headers=manager.headers,
                )
                assert invited.status_code == 201, invited.text

                # The invitation, over SMTP, to the invitee (not a member yet).
                async def invitation():
                    return mailbox.to("nina@hotel.example.com")

                [mail] = await eventually(invitation)
                assert mail["Subject"] == "Ada Admin vous invite à rejoindre Hotel Test sur Roomee"
                assert mail["From"] == "Roomee <no-reply@roomee.example.com>"
                text = mail.get_body(("plain",)).get_content()
                html = mail.get_body(("html",)).get_content()
                link = re.search(r"https?://\S+", text).group(0)
                assert link.startswith(f"{running.url}/signup?token=")
                assert f'href="{link}"' in html and "Bonjour Nina New" in text

                # The manager sees it live, without the token.
                sent = await socket.wait(NOTIFICATION_NEW, lambda p: p["type"] == "member.onboarding")
                assert sent["body"] == "Invitation envoyée à nina@hotel.example.com pour rejoindre Hotel Test"
                token = token_from_link(link)
                assert token not in json.dumps(sent)

                # The invitee follows the link from the email.
                signed_up = await client.post("/users/signUp", json={"token": token, "password": PASSWORD})
                assert signed_up.status_code == 201, signed_up.text
                nina = Person("nina@hotel.example.com", PASSWORD,
                              await sign_in(client, "nina@hotel.example.com", PASSWORD))
                assert nina.workspace_id == manager.workspace_id

                registered = await socket.wait(NOTIFICATION_NEW, lambda p: p["type"] == "member.registered")
                assert registered["title"] == "Nouveau membre inscrit"
                assert registered["body"] == "Nina New a rejoint Hotel Test"
                assert registered["actor"]["id"] == nina.member_id
                await socket.wait(UNREAD_COUNTERS, lambda p: p["unread"] == 2)
            finally:
                await socket.close()

            assert [n["type"] for n in await inbox(client, manager)] == ["member.registered", "member.onboarding"]
            assert await unread(client, manager) == 2
            assert all(token not in json.dumps(n) for n in await inbox(client, manager))
            await asyncio.sleep(0.2)
            assert len(mailbox.to("nina@hotel.example.com")) == 1  # one invitation, sent once
    finally:
        smtp.stop()
