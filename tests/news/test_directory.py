"""The receivers of an article come from the news service's local member directory, kept by
``POST /members/sync`` (periodic, from a stored cursor) and member events; publishing never
calls the members service."""

from __future__ import annotations

import sqlalchemy as sa
from prometheus_client import REGISTRY

from roomee.kit import directory as kit_directory
from roomee.kit.clock import utcnow
from roomee.news.models import DIRECTORY_TABLES
from roomee.news.repository import directory
from tests.news.support import create_article, create_feed, news_service, news_team
from tests.notification.support import eventually


def _calls_to_members() -> tuple[float, float]:
    """(periodic sync calls, any other call) news made to the members service, from its client metric."""
    sync = other = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if (sample.name == "http_client_request_duration_seconds_count" and sample.labels.get("service") == "news"
                    and sample.labels.get("target") == "members"):
                if "/members/sync" in sample.labels.get("endpoint", ""):
                    sync += sample.value
                else:
                    other += sample.value
    return sync, other


async def _receivers(team, article) -> list[str]:
    envelope = await team.tap.wait_for("roomee.notification.page.created", lambda e: e["payload"]["id"] == article["id"])
    return sorted(envelope["metadata"]["receiverIds"])


async def test_receivers_follow_member_events_without_calling_members(tmp_path):
    async with news_team(tmp_path, members=2) as team:
        client, admin, (bob, carol) = team.client, team.admin, team.members
        feed = await create_feed(client, admin)
        syncs, before = _calls_to_members()
        assert syncs >= 1  # the metric sees news' calls to members: the sync at start
        first = await create_article(client, admin, feed, title="Un")
        assert await _receivers(team, first) == sorted([bob.member_id, carol.member_id])

        removed = await client.delete(f"/members/{bob.member_id}", headers=admin.headers)
        assert removed.status_code == 204, removed.text
        ctx = news_service(team.running)

        async def bob_gone():
            async with ctx.db.transaction() as session:
                return (await directory(session).member(bob.member_id))["deleted_at"] is not None

        await eventually(bob_gone)
        second = await create_article(client, admin, feed, title="Deux")
        assert await _receivers(team, second) == [carol.member_id]
        assert _calls_to_members()[1] == before


async def test_the_periodic_sync_rebuilds_the_directory_from_its_cursor(tmp_path):
    async with news_team(tmp_path, members=2) as team:
        client, admin, (bob, carol) = team.client, team.admin, team.members
        ctx = news_service(team.running)
        async with ctx.db.transaction() as session:
            await session.execute(sa.delete(DIRECTORY_TABLES.member))
            await session.execute(sa.delete(DIRECTORY_TABLES.workspace))
            await session.execute(sa.delete(DIRECTORY_TABLES.sync_cursor))
        applied = await kit_directory.sync_members(ctx, directory, utcnow)
        assert applied >= 3
        async with ctx.db.transaction() as session:
            store = directory(session)
            assert await store.cursor(kit_directory.SYNC_CURSOR)
            assert await store.active_member_ids(admin.workspace_id) == sorted(
                [admin.member_id, bob.member_id, carol.member_id])
            assert (await store.workspace(admin.workspace_id))["name"] == "Hotel Test"
            assert (await store.member(bob.member_id))["name"] == "Bob Staff"
        # Up to date: the stored cursor resumes where the last page ended.
        assert await kit_directory.sync_members(ctx, directory, utcnow) == 0
        article = await create_article(client, admin, await create_feed(client, admin), title="Après resync")
        assert await _receivers(team, article) == sorted([bob.member_id, carol.member_id])
