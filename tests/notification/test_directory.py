"""The local member directory: filled from ``POST /members/sync`` (periodically, from a stored
cursor) and from member events; it decides names, emails, locales and who is still a member."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from roomee.notification import directory
from roomee.notification.models import member_directory, notification_receiver, sync_cursor
from roomee.notification.repository import DirectoryRepository
from tests.notification.support import (
    event,
    eventually,
    inbox,
    publish,
    team_platform,
    wait_directory,
    wait_handled,
)


async def _directory(team) -> dict[str, dict]:
    async with team.ctx.db.transaction() as session:
        rows = await session.execute(sa.select(member_directory))
        return {row["member_id"]: dict(row) for row in rows.mappings()}


async def test_sync_from_members_fills_the_directory_and_resumes_from_its_cursor(tmp_path):
    async with team_platform(tmp_path, members=1, members_sync_interval_seconds=1.0) as team:
        bob = team.members[0]
        async with team.ctx.db.transaction() as session:
            await session.execute(sa.delete(member_directory))
            await session.execute(sa.delete(sync_cursor))
        # The worker syncs again within its interval, from the start since the cursor is gone.
        await wait_directory(team.running, [team.admin, bob])
        entries = await _directory(team)
        assert entries[bob.member_id]["email"] == "bob@hotel.example.com"
        assert entries[bob.member_id]["name"] == "Bob Staff"
        assert entries[bob.member_id]["workspace_id"] == bob.workspace_id
        async with team.ctx.db.transaction() as session:
            assert await DirectoryRepository(session).cursor(directory.SYNC_CURSOR)
        # Up to date: nothing more to apply until something changes.
        assert await directory.sync_members(team.ctx) == 0
        renamed = await team.client.patch(f"/members/{bob.member_id}", json={"firstName": "Robert", "locale": "en"},
                                          headers=bob.headers)
        assert renamed.status_code == 200
        await wait_directory(team.running, [bob], name="Robert Staff", locale="en")


async def test_a_removed_member_is_no_longer_notified(tmp_path):
    async with team_platform(tmp_path, members=2) as team:
        client, admin, (bob, carol) = team.client, team.admin, team.members
        removed = await client.delete(f"/members/{bob.member_id}", headers=admin.headers)
        assert removed.status_code == 204, removed.text

        async def gone():
            return (await _directory(team))[bob.member_id]["deleted_at"] is not None

        await eventually(gone)
        page = event(admin, [bob, carol])
        await publish(team.running, page)
        await wait_handled(team.running, page)
        carol_items = [i for i in await inbox(client, carol) if i["type"] == "page.created"]
        assert len(carol_items) == 1
        async with team.ctx.db.transaction() as session:
            receivers = await session.execute(
                sa.select(notification_receiver.c.member_id).where(
                    notification_receiver.c.notification_id == carol_items[0]["id"])
            )
            assert list(receivers.scalars()) == [carol.member_id]


async def test_a_stored_cursor_members_no_longer_accepts_restarts_the_sync(tmp_path):
    """A cursor kept from a former format or key answers 422: the sync starts over instead of failing forever."""
    async with team_platform(tmp_path, members=1) as team:
        bob = team.members[0]
        async with team.ctx.db.transaction() as session:
            await session.execute(sa.delete(member_directory))
            await DirectoryRepository(session).save_cursor(directory.SYNC_CURSOR, "WyJ4IiwgInkiXQ", datetime.now(UTC))
        assert await directory.sync_members(team.ctx) >= 2
        entries = await _directory(team)
        assert {team.admin.member_id, bob.member_id} <= entries.keys()
