"""Every news route is scoped by the caller's workspace: another hotel's pages and comments answer
404 (never 403, which would confirm they exist) and never appear in a list."""

from __future__ import annotations

from tests.fixtures.people import make_admin
from tests.news.support import comment, create_article, create_feed, every_route, news_team, wait_news_directory


async def test_another_hotels_pages_and_comments_answer_404_on_every_route(tmp_path):
    async with news_team(tmp_path, members=1) as team:
        client, admin, bob = team.client, team.admin, team.members[0]
        feed = await create_feed(client, admin)
        article = await create_article(client, admin, feed, requiresAcknowledgement=True)
        bobs = await comment(client, bob, article)

        stranger = await make_admin(team.running, client, "olga@other-hotel.example.com", hotel_name="Autre Hôtel")
        assert stranger.workspace_id != admin.workspace_id and stranger.hotel_id != admin.hotel_id
        await wait_news_directory(team.running, [stranger])
        own_feed = await create_feed(client, stranger, "Leur flux")

        # Every route but the top-level list (which shows the stranger's own pages, checked below).
        page_routes = [*every_route(feed, article, bobs)[1:], ("GET", "/api/v1/pages?parentId=" + feed["id"], None)]
        for method, path, body in page_routes:
            response = await client.request(method, path, json=body, headers=stranger.headers)
            assert response.status_code == 404, (method, path, response.text)

        top = await client.get("/api/v1/pages", headers=stranger.headers)
        assert [p["id"] for p in top.json()["items"]] == [own_feed["id"]]
        mine = await client.get("/api/v1/pages", headers=admin.headers)
        assert [p["id"] for p in mine.json()["items"]] == [feed["id"]]

        # Nothing changed on our side.
        seen = (await client.get(f"/api/v1/pages/{article['id']}", headers=bob.headers)).json()
        assert (seen["title"], seen["commentCount"], seen["likeCount"]) == (article["title"], 1, 0)
        comments = (await client.get(f"/api/v1/pages/{article['id']}/comments", headers=bob.headers)).json()["items"]
        assert [(c["id"], c["content"]) for c in comments] == [(bobs["id"], bobs["content"])]

        # The stranger's article notifies only the stranger's workspace.
        theirs = await create_article(client, stranger, own_feed, title="Chez nous")
        event = await team.tap.wait_for("roomee.notification.page.created", lambda e: e["payload"]["id"] == theirs["id"])
        assert event["workspaceId"] == stranger.workspace_id and event["metadata"]["receiverIds"] == []

