"""The sign-up link of an invitation reaches the invitee's mailbox and nowhere else (issue 7, item 1):
not the inviter's email, not a notification, not an outbox row once sent, not a log line."""

from __future__ import annotations

import email
import email.policy
import json
import logging
from datetime import UTC, datetime

import sqlalchemy as sa

from tests.fixtures.events import event_tap
from tests.fixtures.people import make_admin, token_from_link
from tests.notification.support import eventually, inbox

INVITEES = [f"guest{i}@example.com" for i in range(3)]


def _mails(data_dir) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(path.read_bytes(), policy=email.policy.default) for path in sorted((data_dir / "mail").glob("*.eml"))]


async def _rows_of_every_table(running, target: str) -> str:
    spec = next(s for s in running.platform.targets if s.name == target)
    dump = []
    async with running.platform.services[target].db.transaction() as session:
        for table in spec.metadata.sorted_tables:
            rows = (await session.execute(sa.select(table))).mappings().all()
            dump += [json.dumps({k: str(v) for k, v in row.items()}) for row in rows]
    return "\n".join(dump)


async def test_only_the_invitee_gets_the_link(platform, caplog):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="roomee")
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        tokens = []
        for address in INVITEES:
            response = await client.post("/members/", json={"email": address}, headers=admin.headers)
            assert response.status_code == 201
            event = await tap.wait_for("roomee.notification.member.onboarding",
                                       lambda e, a=address: e["payload"]["email"] == a)
            tokens.append(token_from_link(event["payload"]["signupLink"]))

        async def invitations_sent():
            mails = _mails(platform.settings.data_dir)
            return len([m for m in mails if m["To"] in INVITEES]) == len(INVITEES) and mails

        mails = await eventually(invitations_sent, timeout=15)
        for address, token in zip(INVITEES, tokens):
            [mail] = [m for m in mails if m["To"] == address]
            assert token in mail.get_body(("plain",)).get_content()
        # The inviter gets the in-app notice only.
        assert [m for m in mails if m["To"] == "admin@example.com"] == []
        notices = [n for n in await inbox(client, admin) if n["type"] == "member.onboarding"]
        assert len(notices) == len(INVITEES)

        async def outboxes_clear():
            dumps = [await _rows_of_every_table(platform, t) for t in ("members", "notification")]
            return not any(token in dump for token in tokens for dump in dumps)

        # Kept nowhere once the email is sent: not in renders, receivers, attempts, outboxes.
        await eventually(outboxes_clear, timeout=10)
        logged = "\n".join(record.getMessage() + json.dumps(record.__dict__, default=str) for record in caplog.records)
        assert not any(token in logged for token in tokens)


async def test_the_migration_takes_stored_invitation_emails_out_of_renders(tmp_path):
    """Notifications stored before the fix kept the invitation email (with the link) in their renders."""
    from roomee.kit import migrations
    from roomee.kit.db import Database
    from roomee.notification.models import notification
    from tests.fixtures.platform import make_settings

    settings = make_settings(tmp_path).for_service("notification")
    db = Database("notification", settings)
    try:
        await migrations.upgrade("roomee.notification", db, "879de79d849e")
        stored = {"fr": {"title": "Invitation envoyée", "body": "b", "subject": "s", "text": "/signup?token=secret",
                         "html": '<a href="/signup?token=secret">'}}
        async with db.transaction() as session:
            await session.execute(sa.insert(notification).values(
                id="n-1", event_id="e-1", workspace_id="w-1", type="member.onboarding", category="members",
                renders=stored, data={}, created_at=datetime.now(UTC)))
        await migrations.upgrade("roomee.notification", db)
        async with db.transaction() as session:
            renders = (await session.execute(sa.select(notification.c.renders))).scalar_one()
        assert renders == {"fr": {"title": "Invitation envoyée", "body": "b"}}
    finally:
        await db.dispose()
