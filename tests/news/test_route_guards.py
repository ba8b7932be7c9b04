"""What tests/news/test_tenant_isolation.py leaves out: every news route refuses a request without a
token (401) and a platform service's token (403: news serves members only), staff without
``publish_pages`` do not see the acknowledgement summary (403), and an id that is not one (encoded
slash, NUL, non-ASCII, too long) is a clear 4xx with the kit's error body, never a 500."""

from __future__ import annotations

from tests.news.support import comment, create_article, create_feed, every_route, news_team


# (raw path segment, answers): an encoded slash matches no route, a NUL is refused before any route
# (422 invalid_text), the others reach the route.
ODD_IDS = [("a%2Fb", {404}), ("nul%00", {422}), ("%C3%A9t%C3%A9", {404}), ("%27%3B--", {404}), ("x" * 37, {422})]


async def test_every_route_wants_a_member_token_and_odd_ids_are_a_clear_4xx(tmp_path):
    async with news_team(tmp_path, members=1) as team:
        client, admin, bob = team.client, team.admin, team.members[0]
        feed = await create_feed(client, admin)
        page = await create_article(client, admin, feed, requiresAcknowledgement=True)
        made = await comment(client, bob, page)
        service = await team.running.service_headers("hotel")
        for method, path, body in every_route(feed, page, made):
            assert (await client.request(method, path, json=body)).status_code == 401, (method, path)
            refused = await client.request(method, path, json=body, headers=service)
            assert refused.status_code == 403, (method, path, refused.text)

        summary = await client.get(f"/api/v1/pages/{page['id']}/acknowledgements/summary", headers=bob.headers)
        assert summary.status_code == 403 and summary.json()["error"] == "permission_denied"

        for odd, expected in ODD_IDS:
            odd_page, odd_comment = {"id": odd}, {"id": odd}
            for method, path, body in every_route(feed, odd_page, odd_comment)[2:]:
                if method == "POST":  # the id travels in the body, where the validation differs
                    continue
                response = await client.request(method, path, json=body, headers=admin.headers)
                assert response.status_code in expected, (method, path, response.text)
                assert response.json()["error"], response.text
        # In a body, an unknown page is 404 and a NUL 422.
        for page_id, expected in (("a/b", {404}), ("nul\x00", {422}), ("été", {404})):
            response = await client.post("/api/v1/comments", json={"pageId": page_id, "content": "x"},
                                         headers=bob.headers)
            assert response.status_code in expected, (page_id, response.text)

        # Nothing was changed by any of it.
        seen = (await client.get(f"/api/v1/pages/{page['id']}", headers=bob.headers)).json()
        assert (seen["title"], seen["commentCount"], seen["likeCount"]) == (page["title"], 1, 0)
