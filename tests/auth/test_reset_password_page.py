"""The built-in reset-password page: a reset link works out of the box, without a front end."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qs, urlparse

from tests.fixtures.events import event_tap
from tests.fixtures.people import make_admin
from tests.fixtures.platform import make_settings, running_platform, sign_in
from tests.notification.support import eventually

NEW_PASSWORD = "a brand new passphrase"


async def test_the_reset_link_opens_a_form_whose_request_changes_the_password(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        assert (await client.post("/users/password/forgot", json={"email": admin.email})).status_code == 202
        event = await tap.wait_for("roomee.notification.user.password_reset")
        link = event["payload"]["resetLink"]
        assert link.startswith(f"{platform.url}/reset-password?token=")

        page = await client.get(link)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
        assert not re.search(r'\b(src|href)=', page.text) and "<link" not in page.text
        assert set(re.findall(r'<input[^>]* name="(\w+)"', page.text)) == {"token", "password", "confirm"}
        token = unescape(re.search(r'name="token" value="([^"]*)"', page.text)[1])
        assert token == parse_qs(urlparse(link).query)["token"][0]
        assert "fetch('users/password/reset'" in page.text  # relative: both are auth's, behind any prefix

        # What the page's script sends.
        reset = await client.post("/users/password/reset", json={"token": token, "password": NEW_PASSWORD})
        assert reset.status_code == 204, reset.text
        async def signed_out():
            return (await client.get("/users/me", headers=admin.headers)).status_code == 401

        await eventually(signed_out, timeout=15)  # the session ends everywhere within a poll of the feed
        await sign_in(client, admin.email, NEW_PASSWORD)


async def test_a_malformed_reset_link_is_an_html_404(platform):
    async with platform.client() as client:
        for query in ("", "?token=", "?token=short", "?token=" + "a" * 201, "?token=%3Cscript%3Ealert(1)%3C/script%3E"):
            page = await client.get(f"/reset-password{query}")
            assert page.status_code == 404, query
            assert page.headers["content-type"].startswith("text/html") and "<script>alert" not in page.text


async def test_with_a_reset_url_the_page_redirects_there_with_the_token(tmp_path):
    settings = make_settings(tmp_path, reset_password_url="https://app.roomee.example/reset")
    async with running_platform(settings, "auth") as running, running.client() as client:
        answer = await client.get("/reset-password?token=abcdefghijkl", follow_redirects=False)
    assert answer.status_code == 307
    assert answer.headers["location"] == "https://app.roomee.example/reset?token=abcdefghijkl"
