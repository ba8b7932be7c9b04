"""Likes (idempotent, likeCount, ``like.created`` to the author) and acknowledgements (members
acknowledge; a publisher sees who has and who has not)."""

from __future__ import annotations

import asyncio

from tests.news.support import create_article, create_feed, every_item, news_team


async def test_likes_are_idempotent_and_notify_the_author_once(tmp_path):
    async with news_team(tmp_path, members=2) as team:
        client, tap, admin, (bob, carol) = team.client, team.tap, team.admin, team.members
        article = await create_article(client, admin, await create_feed(client, admin))
        likes = await asyncio.gather(*(client.put(f"/api/v1/pages/{article['id']}/like", headers=bob.headers) for _ in range(3)))
        assert {r.status_code for r in likes} == {200}
        assert {r.json()["likeCount"] for r in likes} == {1}
        await client.put(f"/api/v1/pages/{article['id']}/like", headers=carol.headers)
        await client.put(f"/api/v1/pages/{article['id']}/like", headers=admin.headers)  # the author: no event
        page = (await client.get(f"/api/v1/pages/{article['id']}", headers=bob.headers)).json()
        assert page["likeCount"] == 3 and page["likedByMe"] is True
        assert (await client.get(f"/api/v1/pages/{article['id']}", headers=team.members[1].headers)).json()["likedByMe"]

        event = await tap.wait_for("roomee.notification.like.created", lambda e: e["metadata"]["actor"]["id"] == bob.member_id)
        assert event["channels"] == ["push", "socket"] and event["metadata"]["receiverIds"] == [admin.member_id]
        assert event["payload"]["page"] == {"id": article["id"], "title": article["title"], "pageType": "article"}
        await tap.wait_for("roomee.notification.like.created", lambda e: e["metadata"]["actor"]["id"] == carol.member_id)
        await asyncio.sleep(0.5)
        actors = sorted(e["metadata"]["actor"]["id"] for e in tap.of("roomee.notification.like.created"))
        assert actors == sorted([bob.member_id, carol.member_id])

        unliked = await client.delete(f"/api/v1/pages/{article['id']}/like", headers=bob.headers)
        assert unliked.status_code == 200 and unliked.json() == {"pageId": article["id"], "liked": False, "likeCount": 2}
        again = await client.delete(f"/api/v1/pages/{article['id']}/like", headers=bob.headers)
        assert again.json()["likeCount"] == 2
        assert (await client.put("/api/v1/pages/nope/like", headers=bob.headers)).status_code == 404


async def test_a_publisher_sees_who_has_and_has_not_acknowledged(tmp_path):
    async with news_team(tmp_path, members=3) as team:
        client, admin, (bob, carol, dan) = team.client, team.admin, team.members
        feed = await create_feed(client, admin)
        plain = await create_article(client, admin, feed, title="Sans accusé")
        notice = await create_article(client, admin, feed, title="Consignes incendie", requiresAcknowledgement=True)
        assert notice["requiresAcknowledgement"] is True and notice["acknowledgedByMe"] is False

        refused = await client.put(f"/api/v1/pages/{plain['id']}/acknowledgement", headers=bob.headers)
        assert refused.status_code == 409 and refused.json()["error"] == "acknowledgement_not_required"
        first = await client.put(f"/api/v1/pages/{notice['id']}/acknowledgement", headers=bob.headers)
        assert first.status_code == 200, first.text
        again = await client.put(f"/api/v1/pages/{notice['id']}/acknowledgement", headers=bob.headers)
        assert again.json()["acknowledgedAt"] == first.json()["acknowledgedAt"]
        await client.put(f"/api/v1/pages/{notice['id']}/acknowledgement", headers=dan.headers)
        assert (await client.get(f"/api/v1/pages/{notice['id']}", headers=bob.headers)).json()["acknowledgedByMe"] is True

        summary = await client.get(f"/api/v1/pages/{notice['id']}/acknowledgements/summary", headers=admin.headers)
        assert summary.json() == {"pageId": notice["id"], "acknowledged": 2, "pending": 1}
        pending = await client.get(f"/api/v1/pages/{notice['id']}/acknowledgements", headers=admin.headers)
        assert [(m["memberId"], m["name"], m["acknowledged"]) for m in pending.json()["items"]] == [
            (carol.member_id, "Carol Staff", False)
        ]
        done = await every_item(client, admin, f"/api/v1/pages/{notice['id']}/acknowledgements", 1, status="acknowledged")
        assert sorted(m["memberId"] for m in done) == sorted([bob.member_id, dan.member_id])
        assert all(m["acknowledgedAt"] for m in done)

        # Staff may acknowledge but not see the others.
        hidden = await client.get(f"/api/v1/pages/{notice['id']}/acknowledgements", headers=bob.headers)
        assert hidden.status_code == 403
        for params in ({"status": "maybe"}, {"cursor": "forged"}, {"limit": 0}):
            bad = await client.get(f"/api/v1/pages/{notice['id']}/acknowledgements", params=params, headers=admin.headers)
            assert bad.status_code == 422, (params, bad.text)
        assert (await client.put("/api/v1/pages/nope/acknowledgement", headers=bob.headers)).status_code == 404
