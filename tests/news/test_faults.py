"""Faults on the news flows: the media service unreachable fails a page with media cleanly (503,
nothing stored, nothing emitted) while pages without media still publish; an empty directory gives
an article no receivers rather than an error."""

from __future__ import annotations

import json

import sqlalchemy as sa

from roomee.kit.directory import DIRECTORY_EVENTS, SYNC_CURSOR
from roomee.kit.events import topic_matches
from roomee.kit.events.tables import inbox_table, outbox_table
from roomee.news.events import DIRECTORY_QUEUE
from roomee.news.models import DIRECTORY_TABLES
from tests.fixtures.platform import free_port
from tests.news.support import create_article, create_feed, news_service, news_team
from tests.notification.support import eventually


async def test_media_unreachable_answers_503_and_stores_nothing(tmp_path):
    # Nothing listens on the media URL: every check is a connection error (and opens the breaker).
    async with news_team(tmp_path, members=1, media_url=f"http://127.0.0.1:{free_port()}") as team:
        client, admin = team.client, team.admin
        feed = await create_feed(client, admin)
        for _ in range(3):
            failed = await client.post("/api/v1/pages", json={"pageType": "article", "parentId": feed["id"],
                                                              "title": "Avec photo", "medias": ["m-1"]},
                                       headers=admin.headers)
            assert failed.status_code == 503, failed.text
            assert failed.json()["error"] == "service_unavailable"
        listed = await client.get("/api/v1/pages", params={"parentId": feed["id"]}, headers=admin.headers)
        assert listed.json()["items"] == []
        plain = await create_article(client, admin, feed, title="Sans photo")
        await team.tap.wait_for("roomee.notification.page.created", lambda e: e["payload"]["id"] == plain["id"])
        assert [e["payload"]["title"] for e in team.tap.of("roomee.notification.page.created")
                if e["payload"]["title"] == "Avec photo"] == []


async def _directory_settled(running) -> None:
    """Until nothing can write the news directory any more: every directory event members emitted is
    published and handled by news, and the directory's first sync with members is done (the next is a
    sync interval away). Emptying the directory before that raced with a late ``member.*`` event or a
    sync retried from start-up, which wrote the members back between the delete and the article."""
    members, news = running.platform.services["members"].db, news_service(running).db
    queue = running.settings.queue_prefix + DIRECTORY_QUEUE

    async def settled() -> bool:
        async with members.transaction() as session:
            rows = (await session.execute(sa.select(outbox_table.c.body, outbox_table.c.routing_key,
                                                    outbox_table.c.published_at))).all()
        emitted = {json.loads(row.body)["id"] for row in rows
                   if any(topic_matches(binding, row.routing_key) for binding in DIRECTORY_EVENTS)}
        if any(row.published_at is None for row in rows):
            return False
        async with news.transaction() as session:
            handled = set((await session.execute(
                sa.select(inbox_table.c.event_id).where(inbox_table.c.queue == queue))).scalars())
            synced = (await session.execute(sa.select(sa.func.count()).select_from(DIRECTORY_TABLES.sync_cursor)
                                            .where(DIRECTORY_TABLES.sync_cursor.c.name == SYNC_CURSOR))).scalar_one()
        return emitted <= handled and synced == 1

    await eventually(settled, timeout=30)


async def test_an_article_published_before_the_directory_knows_anyone_has_no_receivers(tmp_path):
    async with news_team(tmp_path, members=1) as team:
        client, admin = team.client, team.admin
        ctx = news_service(team.running)
        await _directory_settled(team.running)
        async with ctx.db.transaction() as session:
            await session.execute(sa.delete(DIRECTORY_TABLES.member))
            await session.execute(sa.delete(DIRECTORY_TABLES.workspace))
        article = await create_article(client, admin, await create_feed(client, admin))
        envelope = await team.tap.wait_for("roomee.notification.page.created",
                                           lambda e: e["payload"]["id"] == article["id"])
        assert envelope["metadata"]["receiverIds"] == [] and envelope["workspaceName"] is None
