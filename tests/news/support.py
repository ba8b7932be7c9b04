"""Helpers for the news tests: a hotel team on the whole platform, known to the news directory."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import asynccontextmanager
from typing import Any

from roomee.news.repository import directory
from tests.notification.support import eventually, team_platform


def news_service(running):
    return running.platform.services["news"]


async def wait_news_directory(running, people: Iterable[Any]) -> None:
    """Wait until the news directory knows these members as active."""
    ctx = news_service(running)
    wanted = [p.member_id for p in people]

    async def known() -> bool:
        async with ctx.db.transaction() as session:
            store = directory(session)
            rows = [await store.member(member_id) for member_id in wanted]
        return all(row is not None and row["deleted_at"] is None for row in rows)

    await eventually(known)


@asynccontextmanager
async def news_team(tmp_path, members: int = 2, **overrides):
    """The platform with a recording OneSignal, an admin (a publisher) and ``members`` staff, all
    known to the news and notification directories."""
    async with team_platform(tmp_path, members=members, **overrides) as team:
        await wait_news_directory(team.running, [team.admin, *team.members])
        yield team


async def create_page(client, person, expected: int = 201, headers: dict | None = None, **body) -> dict:
    response = await client.post("/api/v1/pages", json=body, headers={**person.headers, **(headers or {})})
    assert response.status_code == expected, response.text
    return response.json()


async def create_feed(client, person, title: str = "Actualités") -> dict:
    return await create_page(client, person, pageType="feed", title=title)


async def create_article(client, person, feed: dict, title: str = "Nouvelle politique RH", **body) -> dict:
    return await create_page(client, person, pageType="article", parentId=feed["id"], title=title, **body)


async def comment(client, person, page: dict, content: str = "Merci !", expected: int = 201, **body) -> dict:
    response = await client.post("/api/v1/comments", json={"pageId": page["id"], "content": content, **body},
                                 headers=person.headers)
    assert response.status_code == expected, response.text
    return response.json()


async def every_item(client, person, path: str, limit: int, **params) -> list[dict]:
    """Every item of a cursor-paginated list, following ``nextCursor`` page by page."""
    items, cursor = [], None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query, headers=person.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= limit
        items += body["items"]
        cursor = body["nextCursor"]
        if not cursor:
            return items


def every_route(feed: dict, page: dict, made: dict) -> list[tuple[str, str, dict | None]]:
    """(method, path, body) of every news route, about ``page`` (an article of ``feed``) and its comment ``made``."""
    return [
        ("GET", "/api/v1/pages", None),
        ("POST", "/api/v1/pages", {"pageType": "article", "parentId": feed["id"], "title": "x"}),
        ("GET", f"/api/v1/pages/{page['id']}", None),
        ("PATCH", f"/api/v1/pages/{page['id']}", {"title": "x"}),
        ("DELETE", f"/api/v1/pages/{page['id']}", None),
        ("GET", f"/api/v1/pages/{page['id']}/comments", None),
        ("POST", "/api/v1/comments", {"pageId": page["id"], "content": "x"}),
        ("PATCH", f"/api/v1/comments/{made['id']}", {"content": "x"}),
        ("DELETE", f"/api/v1/comments/{made['id']}", None),
        ("PUT", f"/api/v1/pages/{page['id']}/like", None),
        ("DELETE", f"/api/v1/pages/{page['id']}/like", None),
        ("PUT", f"/api/v1/pages/{page['id']}/acknowledgement", None),
        ("GET", f"/api/v1/pages/{page['id']}/acknowledgements", None),
        ("GET", f"/api/v1/pages/{page['id']}/acknowledgements/summary", None),
    ]
