"""The page tree over HTTP: feeds hold articles, newest first by cursor, sanitised content,
permissions, soft delete, idempotent creation and the page events."""

from __future__ import annotations

from tests.news.support import create_article, create_feed, create_page, every_item, news_team


async def test_feed_and_articles_newest_first_by_cursor_with_sanitised_content(tmp_path):
    async with news_team(tmp_path, members=1) as team:
        client, admin, bob = team.client, team.admin, team.members[0]
        feed = await create_feed(client, admin)
        assert feed["pageType"] == "feed" and feed["parent"] is None and feed["commentCount"] == 0
        articles = [await create_article(client, admin, feed, title=f"Article {n}") for n in range(5)]
        dirty = await create_article(
            client, admin, feed, title="  Sécurité  ",
            content='<p onclick="steal()">Bonjour <script>alert(1)</script><a href="javascript:x()">lien</a>'
                    '<a href="https://roomee.example.com">ok</a></p>',
        )
        assert dirty["title"] == "Sécurité"
        assert "script" not in dirty["content"] and "onclick" not in dirty["content"]
        assert "javascript" not in dirty["content"] and 'href="https://roomee.example.com"' in dirty["content"]
        assert dirty["parent"] == {"id": feed["id"], "title": "Actualités", "pageType": "feed"}
        assert dirty["author"] == {"id": admin.member_id, "name": "Ada Admin"}

        seen = [p["id"] for p in await every_item(client, bob, "/api/v1/pages", 2, parentId=feed["id"])]
        assert seen == [dirty["id"], *[a["id"] for a in reversed(articles)]]

        top = await client.get("/api/v1/pages", headers=bob.headers)
        assert [p["id"] for p in top.json()["items"]] == [feed["id"]]
        only_feeds = await client.get("/api/v1/pages", params={"parentId": feed["id"], "pageType": "feed"},
                                      headers=bob.headers)
        assert only_feeds.json() == {"items": [], "nextCursor": None}
        got = await client.get(f"/api/v1/pages/{articles[0]['id']}", headers=bob.headers)
        assert got.status_code == 200 and got.json()["title"] == "Article 0"
        assert got.json()["parent"]["id"] == feed["id"]


async def test_publishing_needs_publish_pages_and_the_author_may_edit_their_own(tmp_path):
    async with news_team(tmp_path, members=1) as team:
        client, admin, bob = team.client, team.admin, team.members[0]
        feed = await create_feed(client, admin)
        staff_try = await client.post("/api/v1/pages", json={"pageType": "article", "parentId": feed["id"], "title": "x"},
                                      headers=bob.headers)
        assert staff_try.status_code == 403 and staff_try.json()["error"] == "permission_denied"

        article = await create_article(client, admin, feed)
        not_bobs = await client.patch(f"/api/v1/pages/{article['id']}", json={"title": "Piraté"}, headers=bob.headers)
        assert not_bobs.status_code == 403
        cannot_delete = await client.delete(f"/api/v1/pages/{article['id']}", headers=bob.headers)
        assert cannot_delete.status_code == 403

        edited = await client.patch(f"/api/v1/pages/{article['id']}",
                                    json={"title": "Politique RH 2027", "content": "<b>gras</b><img src=x onerror=y>",
                                          "enableNotifications": False},
                                    headers=admin.headers)
        assert edited.status_code == 200, edited.text
        assert edited.json()["title"] == "Politique RH 2027" and edited.json()["enableNotifications"] is False
        assert "onerror" not in edited.json()["content"] and "<b>gras</b>" in edited.json()["content"]
        updated = await team.tap.wait_for("roomee.notification.page.updated",
                                          lambda e: e["payload"]["id"] == article["id"])
        assert updated["channels"] == ["socket"] and updated["payload"]["title"] == "Politique RH 2027"

        deleted = await client.delete(f"/api/v1/pages/{article['id']}", headers=admin.headers)
        assert deleted.status_code == 204
        assert (await client.get(f"/api/v1/pages/{article['id']}", headers=bob.headers)).status_code == 404
        listed = await client.get("/api/v1/pages", params={"parentId": feed["id"]}, headers=bob.headers)
        assert listed.json()["items"] == []
        again = await client.delete(f"/api/v1/pages/{article['id']}", headers=admin.headers)
        assert again.status_code == 404
        gone = await team.tap.wait_for("roomee.notification.page.deleted", lambda e: e["payload"]["id"] == article["id"])
        assert gone["channels"] == ["socket"] and gone["metadata"]["receiverIds"] == []

        # A feed takes its articles with it.
        survivor = await create_article(client, admin, feed, title="Encore là")
        assert (await client.delete(f"/api/v1/pages/{feed['id']}", headers=admin.headers)).status_code == 204
        assert (await client.get(f"/api/v1/pages/{survivor['id']}", headers=bob.headers)).status_code == 404
        under = await client.get("/api/v1/pages", params={"parentId": feed["id"]}, headers=bob.headers)
        assert under.status_code == 404
        assert (await client.get("/api/v1/pages", headers=bob.headers)).json()["items"] == []


async def test_bad_input_is_refused_with_the_field_named(tmp_path):
    async with news_team(tmp_path, members=0) as team:
        client, admin = team.client, team.admin
        feed = await create_feed(client, admin)
        article = await create_article(client, admin, feed)
        cases = [
            ({"pageType": "article", "title": "sans flux"}, "parentId", "invalid_parent"),
            ({"pageType": "article", "parentId": article["id"], "title": "sous article"}, "parentId", "invalid_parent"),
            ({"pageType": "memo", "title": "x"}, "pageType", "validation_error"),
            ({"pageType": "feed", "title": ""}, "title", "validation_error"),
            ({"pageType": "feed", "title": "x" * 301}, "title", "validation_error"),
            ({"pageType": "feed", "title": "x", "medias": "m1"}, "medias", "validation_error"),
            ({"pageType": "feed"}, "title", "validation_error"),
        ]
        for body, field, code in cases:
            response = await client.post("/api/v1/pages", json=body, headers=admin.headers)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["error"] == code
            assert field in response.json()["detail"][0]["loc"], response.text
        unknown_parent = await client.post("/api/v1/pages", json={"pageType": "article", "parentId": "nope", "title": "x"},
                                           headers=admin.headers)
        assert unknown_parent.status_code == 404 and unknown_parent.json()["error"] == "parent_not_found"
        for params in ({"cursor": "forged"}, {"limit": 0}, {"limit": 101}, {"pageType": "memo"}):
            response = await client.get("/api/v1/pages", params=params, headers=admin.headers)
            assert response.status_code == 422, (params, response.text)
        assert (await client.get("/api/v1/pages", params={"parentId": "nope"}, headers=admin.headers)).status_code == 404
        bad_patch = await client.patch(f"/api/v1/pages/{article['id']}", json={"title": ""}, headers=admin.headers)
        assert bad_patch.status_code == 422
        assert (await client.get("/api/v1/pages")).status_code == 401
        assert (await client.get("/api/v1/pages", headers={"Authorization": "Bearer nope"})).status_code == 401


async def test_an_idempotency_key_makes_a_retried_create_return_the_first_page(tmp_path):
    async with news_team(tmp_path, members=1) as team:
        client, admin = team.client, team.admin
        feed = await create_feed(client, admin)
        key = {"Idempotency-Key": "publish-42"}
        first = await create_page(client, admin, pageType="article", parentId=feed["id"], title="Une fois", headers=key)
        retry = await client.post("/api/v1/pages", json={"pageType": "article", "parentId": feed["id"], "title": "Une fois"},
                                  headers={**admin.headers, **key})
        assert retry.status_code == 201 and retry.json()["id"] == first["id"]
        listed = await client.get("/api/v1/pages", params={"parentId": feed["id"]}, headers=admin.headers)
        assert [p["id"] for p in listed.json()["items"]] == [first["id"]]
        await team.tap.wait_for("roomee.notification.page.created", lambda e: e["payload"]["id"] == first["id"])
        assert len([e for e in team.tap.of("roomee.notification.page.created") if e["payload"]["title"] == "Une fois"]) == 1
