"""Faults on the news flows: the media service unreachable fails a page with media cleanly (503,
nothing stored, nothing emitted) while pages without media still publish; an empty directory gives
an article no receivers rather than an error."""

from __future__ import annotations

import sqlalchemy as sa

from roomee.news.models import DIRECTORY_TABLES
from tests.fixtures.platform import free_port
from tests.news.support import create_article, create_feed, news_service, news_team


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


async def test_an_article_published_before_the_directory_knows_anyone_has_no_receivers(tmp_path):
    async with news_team(tmp_path, members=1) as team:
        client, admin = team.client, team.admin
        ctx = news_service(team.running)
        async with ctx.db.transaction() as session:
            await session.execute(sa.delete(DIRECTORY_TABLES.member))
            await session.execute(sa.delete(DIRECTORY_TABLES.workspace))
        article = await create_article(client, admin, await create_feed(client, admin))
        envelope = await team.tap.wait_for("roomee.notification.page.created",
                                           lambda e: e["payload"]["id"] == article["id"])
        assert envelope["metadata"]["receiverIds"] == [] and envelope["workspaceName"] is None
