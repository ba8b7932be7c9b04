"""The news and media flows across a RabbitMQ outage (issue 7: faults delay work, never drop it).

With the broker stopped, staff keep publishing articles, commenting, liking and uploading photos,
and an operator changes a hotel's plan: every request answers 2xx (the events wait in the outboxes,
uploads need no broker). Once RabbitMQ is back, every notification reaches its receivers' sockets
exactly once, the inboxes hold them, each upload is counted once in the storage usage and the new
plan's quota reaches media. RabbitMQ is required on both backends (the database follows the backend).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from roomee.notification.channels import NOTIFICATION_NEW
from tests.e2e.test_broker_outage import _on_rabbitmq, rabbitmqctl
from tests.fixtures.media import direct_upload, grant_storage, jpeg
from tests.hotel.support import add_hotel, hotel_body, wait_for_status
from tests.news.support import create_article, create_feed, news_team
from tests.notification.support import SocketInbox, eventually, inbox

ARTICLES, COMMENTS, UPLOADS = 3, 4, 2
OUTAGE_SECONDS = 4.0


def _of(socket: SocketInbox, kind: str) -> list[dict]:
    """The notifications of ``kind`` a socket received (not the UI updates, which carry no id)."""
    return [p for p in socket.received[NOTIFICATION_NEW] if p.get("type") == kind and p["id"]]


@pytest.mark.timeout(180)
async def test_news_and_media_work_through_a_broker_outage_and_nothing_is_lost_or_doubled(tmp_path):
    rabbit = _on_rabbitmq(tmp_path)
    overrides = {"broker_url": rabbit.broker_url, "exchange": rabbit.exchange, "queue_prefix": rabbit.queue_prefix}
    async with news_team(tmp_path, members=2, **overrides) as team:
        client, author, (bob, carol) = team.client, team.admin, team.members
        # The member profile's wire name (the same before and after the hotel_id rename of the code).
        await grant_storage(team.running, author.session["member"]["ecosystemId"], 100)
        operator = await team.running.service_headers("operator")
        hotel_id = await add_hotel(client, operator, hotel_body(plan="premium"))
        assert (await wait_for_status(client, operator, hotel_id))["status"] == "ready"
        plans = {p["id"]: p for p in (await client.get("/sub/plans")).json()}
        standard_quota = plans["standard"]["storageQuota"]["maxSize"]
        sockets = {p.email: await SocketInbox(NOTIFICATION_NEW).connect(team.running, p) for p in (author, bob, carol)}
        feed = await create_feed(client, author)

        async def call(method: str, path: str, person=None, **kwargs) -> dict:
            """One request while the broker is down: it must succeed all the same."""
            headers = kwargs.pop("headers", None) or person.headers
            response = await client.request(method, path, headers=headers, **kwargs)
            assert 200 <= response.status_code < 300, (method, path, response.status_code, response.text)
            return response.json()

        try:
            await rabbitmqctl("stop_app")
            stopped = time.monotonic()
            try:
                uploaded, photos = [], [jpeg(200 + n, 100) for n in range(UPLOADS)]
                for n, photo in enumerate(photos):
                    done = await direct_upload(client, bob, photo, "image/jpeg", f"photo-{n}.jpg")
                    assert done.status_code == 200, done.text
                    uploaded.append(done.json())
                articles = []
                for n in range(ARTICLES):
                    body = {"pageType": "article", "parentId": feed["id"], "title": f"Pendant la panne {n}",
                            "medias": [m["id"] for m in uploaded] if n == 0 else []}
                    articles.append(await call("POST", "/api/v1/pages", author, json=body))
                comments = [await call("POST", "/api/v1/comments", (bob, carol)[n % 2],
                                       json={"pageId": articles[0]["id"], "content": f"Commentaire {n}"})
                            for n in range(COMMENTS)]
                for article in articles:
                    await call("PUT", f"/api/v1/pages/{article['id']}/like", bob)
                await call("PATCH", f"/hotel/{hotel_id}", headers=operator, json={"plan": "standard"})
                await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
            finally:
                await rabbitmqctl("start_app")
                await rabbitmqctl("await_startup", "--timeout", "60")

            article_ids = {a["id"] for a in articles}
            comment_ids = {c["id"] for c in comments}

            async def all_arrived():
                return all((
                    {p["data"]["id"] for p in _of(sockets[bob.email], "page.created")} >= article_ids,
                    {p["data"]["id"] for p in _of(sockets[carol.email], "page.created")} >= article_ids,
                    # The author: a notification per comment and per like (push + socket).
                    len({p["data"]["id"] for p in _of(sockets[author.email], "comment.created")}) == COMMENTS,
                    len(_of(sockets[author.email], "like.created")) >= ARTICLES,
                )) or None

            await eventually(all_arrived, timeout=60)
            # A last article sent after the restart: once it has arrived, a duplicate of an earlier
            # event would have arrived before it (one queue per consumer, relayed in order).
            last = await create_article(client, author, feed, title="Après la panne")
            for person in (bob, carol):
                await sockets[person.email].wait(NOTIFICATION_NEW, lambda p: p.get("data", {}).get("id") == last["id"],
                                                 timeout=30)

            for person in (bob, carol):
                created = [p["data"]["id"] for p in _of(sockets[person.email], "page.created")]
                assert sorted(created) == sorted([*article_ids, last["id"]]), person.email
                assert len({p["id"] for p in _of(sockets[person.email], "page.created")}) == ARTICLES + 1
            assert _of(sockets[author.email], "page.created") == []
            to_author = _of(sockets[author.email], "comment.created")
            assert sorted(p["data"]["id"] for p in to_author) == sorted(comment_ids)
            likes = _of(sockets[author.email], "like.created")
            assert sorted(p["data"]["page"]["id"] for p in likes) == sorted(article_ids)
            assert len({p["id"] for p in likes}) == ARTICLES
            kinds = [n["type"] for n in await inbox(client, author, limit=100)]
            assert (kinds.count("comment.created"), kinds.count("like.created")) == (COMMENTS, ARTICLES)
            first = next(p for p in _of(sockets[bob.email], "page.created") if p["data"]["id"] == articles[0]["id"])
            assert [m["fileUrl"] for m in first["data"]["medias"]] == [m["fileUrl"] for m in uploaded]

            # Media: each upload counted once; the quota of the new plan arrived through the outbox.
            thumbnails = [(await client.get(m["thumbnailUrl"], headers=bob.headers)).content for m in uploaded]
            usage = (await client.get("/media/storage", headers=bob.headers)).json()
            assert usage["reservedBytes"] == 0
            assert usage["usedBytes"] == sum(map(len, photos)) + sum(map(len, thumbnails))
            as_hotel = await team.running.service_headers("hotel")

            async def quota_changed():
                storage = (await client.get(f"/media/storage/{hotel_id}", headers=as_hotel)).json()
                return storage["maxSize"] == standard_quota or None

            await eventually(quota_changed, timeout=30)
        finally:
            for socket in sockets.values():
                await socket.close()
