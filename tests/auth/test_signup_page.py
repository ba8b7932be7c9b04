"""The built-in sign-up page: an invitation link works out of the box, without a front end."""

from __future__ import annotations

import re
from html import unescape

from tests.fixtures.events import event_tap
from tests.fixtures.people import make_admin, sign_in, token_from_link
from tests.fixtures.platform import make_settings, running_platform


async def test_the_invitation_link_opens_a_form_that_creates_the_account(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        invited = await client.post("/members/", json={"email": "nina@example.com", "role": "staff", "firstName": "N",
                                                       "lastName": "N"}, headers=admin.headers)
        assert invited.status_code == 201, invited.text
        onboarding = await tap.wait_for("roomee.notification.member.onboarding",
                                        lambda e: e["payload"]["onboardingId"] == invited.json()["id"])
        link = onboarding["payload"]["signupLink"]
        assert link.startswith(f"{platform.url}/signup?token=")

        page = await client.get(link)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
        # Self-contained: no external script, style, font or image.
        assert not re.search(r'\\b(src|href)=', page.text) and "<link" not in page.text
        fields = set(re.findall(r'<input[^>]* name="(\w+)"', page.text))
        assert fields == {"token", "firstName", "lastName", "password"}
        token = unescape(re.search(r'name="token" value="([^"]*)"', page.text)[1])
        assert token == token_from_link(link)
        assert "fetch('users/signUp'" in page.text  # relative: /signup and /users/signUp are both auth's

        # What the page's script sends.
        created = await client.post("/users/signUp", json={"token": token, "password": "a long password",
                                                           "firstName": "Nina", "lastName": "New"})
        assert created.status_code == 201, created.text
        assert created.json()["user"]["email"] == "nina@example.com"
        assert (await sign_in(client, "nina@example.com", "a long password"))["member"]["role"] == "staff"


async def test_a_malformed_link_is_an_html_404(platform):
    async with platform.client() as client:
        for query in ("", "?token=", "?token=short", "?token=" + "a" * 201, "?token=%3Cscript%3Ealert(1)%3C/script%3E"):
            page = await client.get(f"/signup{query}")
            assert page.status_code == 404, query
            assert page.headers["content-type"].startswith("text/html") and "<script>alert" not in page.text


async def test_with_a_sign_up_url_the_page_redirects_there_with_the_token(tmp_path):
    settings = make_settings(tmp_path, signup_url="https://app.roomee.example/signup?lang=fr")
    async with running_platform(settings, "auth") as running, running.client() as client:
        answer = await client.get("/signup?token=abcdefghijkl", follow_redirects=False)
    assert answer.status_code == 307
    assert answer.headers["location"] == "https://app.roomee.example/signup?lang=fr&token=abcdefghijkl"
