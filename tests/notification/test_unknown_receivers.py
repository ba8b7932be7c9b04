"""Receivers the directory does not know (issue 7, item 18): resolved through the members service,
dropped when they are no member of the event's workspace; an event never decides a member's tenant."""

from __future__ import annotations

import sqlalchemy as sa

from roomee.notification.models import member_directory, notification_receiver
from roomee.notification.processor import notification_id_for
from tests.fixtures.people import make_admin
from tests.notification.support import SocketInbox, event, inbox, publish, team_platform, wait_handled

NOTIFICATION_NEW = "notification:new"


async def _forget(team, *member_ids: str) -> None:
    async with team.ctx.db.transaction() as session:
        await session.execute(sa.delete(member_directory).where(member_directory.c.member_id.in_(member_ids)))


async def _receivers(team, envelope) -> list[str]:
    async with team.ctx.db.transaction() as session:
        rows = await session.execute(sa.select(notification_receiver.c.member_id).where(
            notification_receiver.c.notification_id == notification_id_for(envelope["id"])))
        return sorted(rows.scalars())


async def test_an_unsynced_receiver_of_the_workspace_is_resolved_and_notified(tmp_path):
    async with team_platform(tmp_path, members=1) as team:
        bob = team.members[0]
        await _forget(team, bob.member_id)
        page = event(team.admin, [bob], channels=("socket", "email"))
        await publish(team.running, page)
        await wait_handled(team.running, page)
        assert await _receivers(team, page) == [bob.member_id]
        async with team.ctx.db.transaction() as session:
            [entry] = (await session.execute(sa.select(member_directory).where(
                member_directory.c.member_id == bob.member_id))).mappings().all()
        assert entry["workspace_id"] == bob.workspace_id and entry["email"] == "bob@hotel.example.com"


async def test_receivers_of_another_hotel_or_of_no_one_are_dropped(tmp_path):
    async with team_platform(tmp_path, members=1) as team:
        other = await make_admin(team.running, team.client, "boss@other-hotel.example.com", "Other Hotel")
        await _forget(team, other.member_id)
        socket = await SocketInbox(NOTIFICATION_NEW).connect(team.running, other)
        try:
            # An event of the first hotel naming the other hotel's admin and an id nobody has.
            page = event(team.admin, [other, "no-such-member", team.members[0]])
            await publish(team.running, page)
            await wait_handled(team.running, page)
            assert await _receivers(team, page) == [team.members[0].member_id]
            assert [i for i in await inbox(team.client, other) if i["type"] == "page.created"] == []
            # A later event to the same member, emitted after: it arrives; the dropped one never did.
            own = event(other, [other], workspace_id=other.workspace_id, payload={"id": "p-2", "title": "Chez nous"})
            await publish(team.running, own)
            await socket.wait(NOTIFICATION_NEW, lambda p: p["data"]["id"] == "p-2")
            assert [p["data"]["id"] for p in socket.received[NOTIFICATION_NEW]] == ["p-2"]
        finally:
            await socket.close()
