"""PATCH changes the fields it sends; ``null`` empties a field only where it may be empty (content,
medias) and is a 422 elsewhere; a boolean is ``true`` or ``false``, never ``0``, ``1``, ``"yes"`` or
``"no"`` (README: "null clears a field only where the field may be empty")."""

from __future__ import annotations

from tests.news.support import create_article, create_feed, news_team


async def test_null_and_wrong_types_are_refused_and_change_nothing(tmp_path):
    async with news_team(tmp_path, members=0) as team:
        client, admin = team.client, team.admin
        feed = await create_feed(client, admin)
        article = await create_article(client, admin, feed, content="<p>Bonjour</p>", enableNotifications=True)
        path = f"/api/v1/pages/{article['id']}"
        refused = [
            ({"title": None}, "title"),
            ({"enableNotifications": None}, "enableNotifications"),
            ({"requiresAcknowledgement": None}, "requiresAcknowledgement"),
        ] + [({"enableNotifications": value}, "enableNotifications") for value in ("yes", "no", 0, 1, "true")]
        for body, field in refused:
            response = await client.patch(path, json=body, headers=admin.headers)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["error"] == "validation_error"
            assert field in response.json()["detail"][0]["loc"], response.text
        for value in (0, "no"):
            created = await client.post("/api/v1/pages", headers=admin.headers, json={
                "pageType": "article", "parentId": feed["id"], "title": "x", "requiresAcknowledgement": value})
            assert created.status_code == 422, (value, created.text)
        unchanged = (await client.get(path, headers=admin.headers)).json()
        assert unchanged == article

        # null empties what may be empty; the other fields stay.
        cleared = await client.patch(path, json={"content": None, "medias": None, "enableNotifications": False},
                                     headers=admin.headers)
        assert cleared.status_code == 200, cleared.text
        body = cleared.json()
        assert (body["content"], body["medias"], body["enableNotifications"]) == ("", [], False)
        assert (body["title"], body["requiresAcknowledgement"]) == (article["title"], article["requiresAcknowledgement"])


async def test_the_document_says_which_fields_take_null(tmp_path):
    async with news_team(tmp_path, members=0) as team:
        document = (await team.client.get("/openapi/news.json")).json()
        fields = document["components"]["schemas"]["PageUpdate"]["properties"]
        for name in ("title", "enableNotifications", "requiresAcknowledgement"):
            assert "default" not in fields[name] and "anyOf" not in fields[name], (name, fields[name])
        for name in ("content", "medias"):
            assert {"type": "null"} in fields[name]["anyOf"], (name, fields[name])


async def test_the_largest_content_the_schema_accepts_fits_the_body_limit(tmp_path):
    """100,000 characters of content, each an astral character that JSON escapes as a surrogate pair
    (12 bytes): 1.2 MB of schema-valid body, which a 1 MiB body limit refused with 413 (found by fuzzing)."""
    import json

    from roomee.news.schemas import MAX_CONTENT

    async with news_team(tmp_path, members=0) as team:
        client, admin = team.client, team.admin
        article = await create_article(client, admin, await create_feed(client, admin))
        content = "\U0001F600" * MAX_CONTENT
        body = json.dumps({"content": content}).encode()  # ensure_ascii: each character as \ud83d\ude00
        assert len(body) > 1024 * 1024
        patched = await client.patch(f"/api/v1/pages/{article['id']}", content=body, headers=admin.headers
                                     | {"content-type": "application/json"})
        assert patched.status_code == 200, patched.text[:300]
        assert len(patched.json()["content"]) >= MAX_CONTENT
        too_long = json.dumps({"content": content + "x"}).encode()
        refused = await client.patch(f"/api/v1/pages/{article['id']}", content=too_long, headers=admin.headers
                                     | {"content-type": "application/json"})
        assert refused.status_code == 422, refused.text[:300]
