"""Comments over HTTP: the page's commentCount (50 concurrent comments: tests/e2e/test_flow3_comment.py),
the two graded events, replies, edit and delete of one's own, idempotency."""

from __future__ import annotations

import asyncio

from tests.news.support import comment, create_article, create_feed, news_team


async def _count(client, person, page) -> int:
    response = await client.get(f"/api/v1/pages/{page['id']}", headers=person.headers)
    assert response.status_code == 200, response.text
    return response.json()["commentCount"]


async def test_the_two_graded_events_of_a_comment(tmp_path):
    async with news_team(tmp_path, members=2) as team:
        client, tap, admin, (bob, _carol) = team.client, team.tap, team.admin, team.members
        article = await create_article(client, admin, await create_feed(client, admin))
        made = await comment(client, bob, article, content="<em>Bravo</em><script>x</script>")
        assert made["content"] == "<em>Bravo</em>" and made["commentCount"] == 1
        assert made["author"]["id"] == bob.member_id

        def of_comment(envelope):
            return envelope["payload"]["id"] == made["id"]

        await tap.wait_for("roomee.notification.comment.created", lambda e: of_comment(e) and "push" in e["channels"])
        ui, for_author = sorted((e for e in tap.of("roomee.notification.comment.created") if of_comment(e)),
                                key=lambda e: len(e["channels"]))
        assert ui["channels"] == ["socket"] and ui["metadata"]["receiverIds"] == []
        assert for_author["channels"] == ["push", "socket"]
        assert for_author["metadata"]["receiverIds"] == [admin.member_id]
        for envelope in (ui, for_author):
            assert envelope["workspaceId"] == bob.workspace_id and envelope["ecosystemId"] == bob.hotel_id
            assert envelope["workspaceName"] == "Hotel Test"
            assert envelope["metadata"]["actor"] == {"id": bob.member_id, "name": "Bob Staff", "type": "member"}
            assert envelope["payload"]["page"] == {"id": article["id"], "title": article["title"], "pageType": "article"}
            assert envelope["payload"]["commentCount"] == 1

        # The author commenting on their own page: only the UI update.
        own = await comment(client, admin, article, content="Merci Bob")
        await tap.wait_for("roomee.notification.comment.created", lambda e: e["payload"]["id"] == own["id"])
        await asyncio.sleep(0.5)
        assert [e["channels"] for e in tap.of("roomee.notification.comment.created") if e["payload"]["id"] == own["id"]] == [["socket"]]


async def test_replies_edits_and_deletes_keep_the_count(tmp_path):
    async with news_team(tmp_path, members=2) as team:
        client, admin, (bob, carol) = team.client, team.admin, team.members
        article = await create_article(client, admin, await create_feed(client, admin))
        first = await comment(client, bob, article, content="Question ?")
        reply = await comment(client, carol, article, content="Réponse", parentId=first["id"])
        assert reply["parentId"] == first["id"] and reply["commentCount"] == 2

        not_hers = await client.patch(f"/api/v1/comments/{first['id']}", json={"content": "x"}, headers=carol.headers)
        assert not_hers.status_code == 403
        edited = await client.patch(f"/api/v1/comments/{first['id']}", json={"content": "Question précise ?"},
                                    headers=bob.headers)
        assert edited.status_code == 200 and edited.json()["content"] == "Question précise ?"
        cannot = await client.delete(f"/api/v1/comments/{first['id']}", headers=carol.headers)
        assert cannot.status_code == 403
        assert (await client.delete(f"/api/v1/comments/{reply['id']}", headers=carol.headers)).status_code == 204
        assert await _count(client, bob, article) == 1
        # A publisher moderates.
        assert (await client.delete(f"/api/v1/comments/{first['id']}", headers=admin.headers)).status_code == 204
        assert await _count(client, bob, article) == 0
        assert (await client.delete(f"/api/v1/comments/{first['id']}", headers=admin.headers)).status_code == 404
        listed = await client.get(f"/api/v1/pages/{article['id']}/comments", headers=bob.headers)
        assert listed.json() == {"items": [], "nextCursor": None}
        deleted = await team.tap.wait_for("roomee.notification.comment.deleted", lambda e: e["payload"]["id"] == first["id"])
        assert deleted["channels"] == ["socket"] and deleted["payload"]["commentCount"] == 0


async def test_a_retried_comment_with_its_key_is_stored_and_counted_once(tmp_path):
    async with news_team(tmp_path, members=1) as team:
        client, admin, bob = team.client, team.admin, team.members[0]
        article = await create_article(client, admin, await create_feed(client, admin))
        headers = {**bob.headers, "Idempotency-Key": "comment-7"}
        body = {"pageId": article["id"], "content": "Une seule fois"}
        answers = await asyncio.gather(*(client.post("/api/v1/comments", json=body, headers=headers) for _ in range(3)))
        assert {a.status_code for a in answers} == {201}
        assert len({a.json()["id"] for a in answers}) == 1
        assert await _count(client, bob, article) == 1


async def test_bad_comments_are_refused(tmp_path):
    async with news_team(tmp_path, members=1) as team:
        client, admin, bob = team.client, team.admin, team.members[0]
        article = await create_article(client, admin, await create_feed(client, admin))
        other = await create_article(client, admin, await create_feed(client, admin, "Autre"), title="Autre")
        on_other = await comment(client, bob, other)
        for body, status in (
            ({"pageId": article["id"], "content": ""}, 422),
            ({"pageId": article["id"]}, 422),
            ({"content": "x"}, 422),
            ({"pageId": article["id"], "content": "x" * 10_001}, 422),
            ({"pageId": article["id"], "content": "<script>only</script>"}, 422),
            ({"pageId": "nope", "content": "x"}, 404),
            ({"pageId": article["id"], "content": "x", "parentId": on_other["id"]}, 404),
        ):
            response = await client.post("/api/v1/comments", json=body, headers=bob.headers)
            assert response.status_code == status, (body, response.text)
        assert (await client.get(f"/api/v1/pages/{article['id']}/comments", params={"cursor": "x"},
                                 headers=bob.headers)).status_code == 422
        assert (await client.get("/api/v1/pages/nope/comments", headers=bob.headers)).status_code == 404
        assert (await client.patch("/api/v1/comments/nope", json={"content": "x"}, headers=bob.headers)).status_code == 404
        assert (await client.patch(f"/api/v1/comments/{on_other['id']}", json={"content": ""},
                                   headers=bob.headers)).status_code == 422
        assert await _count(client, bob, article) == 0


async def test_comments_of_a_page_tell_a_missing_page_from_no_comments(tmp_path):
    """One statement answers both: a live page without comments (or none past the cursor) lists nothing,
    a deleted page answers 404, with or without a cursor."""
    async with news_team(tmp_path, members=1) as team:
        client, admin, bob = team.client, team.admin, team.members[0]
        article = await create_article(client, admin, await create_feed(client, admin))
        url = f"/api/v1/pages/{article['id']}/comments"
        empty = await client.get(url, headers=bob.headers)
        assert (empty.status_code, empty.json()) == (200, {"items": [], "nextCursor": None})
        made = await comment(client, bob, article, content="Seul")
        first = (await client.get(url, params={"limit": 1}, headers=bob.headers)).json()
        assert [c["id"] for c in first["items"]] == [made["id"]] and first["nextCursor"]
        past = await client.get(url, params={"limit": 1, "cursor": first["nextCursor"]}, headers=bob.headers)
        assert (past.status_code, past.json()) == (200, {"items": [], "nextCursor": None})
        assert (await client.delete(f"/api/v1/pages/{article['id']}", headers=admin.headers)).status_code == 204
        for params in ({}, {"limit": 1, "cursor": first["nextCursor"]}):
            gone = await client.get(url, params=params, headers=bob.headers)
            assert gone.status_code == 404 and gone.json()["error"] == "page_not_found", gone.text
