"""/users/me remembers an email's memberships briefly (one members call for many answers) and forgets them
when a member's access changes."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

import roomee.auth.service as auth_service
from tests.fixtures.events import event_tap
from tests.fixtures.people import invite_and_join, make_admin
from tests.fixtures.platform import sign_in
from tests.notification.support import eventually


async def _members_calls(client) -> float:
    text = (await client.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "http_client_request_duration_seconds_count"
        and sample.labels.get("service") == "auth" and sample.labels.get("endpoint") == "/members/get/with/{email}"
    )


async def _access_changes_followed(platform, client) -> None:
    """Until this process has applied the members access-change feed up to its current position."""
    headers = await platform.service_headers("auth")
    feed = await client.get("/members/access-changes", headers=headers)
    assert feed.status_code == 200, feed.text
    position = feed.json()["position"]
    changes = platform.platform.access_changes

    async def caught_up() -> bool:
        return changes.position is not None and changes.position >= position

    await eventually(caught_up)


async def test_me_asks_members_once_and_again_after_an_access_change(platform, monkeypatch):
    # Remembered for the whole test: only the access change may make /users/me ask members again.
    monkeypatch.setattr(auth_service, "RECENT_PROFILES_SECONDS", 3600.0)
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "me-admin@example.com")
        staff = await invite_and_join(client, tap, admin, "me-staff@example.com")
        # The staff's arrival is itself an access change (a member first seen): it reaches this process
        # through the feed polled every second and forgets every remembered profile once. Counting
        # before it arrived saw a second members call when the poll fell between two /users/me.
        await _access_changes_followed(platform, client)

        before = await _members_calls(client)
        for _ in range(3):
            me = await client.get("/users/me", headers=staff.headers)
            assert me.status_code == 200 and me.json()["member"]["role"] == "staff"
        assert await _members_calls(client) - before == 1

        promoted = await client.patch(f"/members/{staff.member_id}", json={"role": "manager"}, headers=admin.headers)
        assert promoted.status_code == 200, promoted.text

        async def old_token_refused():
            response = await client.get("/users/me", headers=staff.headers)
            return response.status_code == 401 and response.json()["error"] == "token_revoked"

        await eventually(old_token_refused)
        staff.session = await sign_in(client, staff.email, staff.password, admin.workspace_id)
        me = await client.get("/users/me", headers=staff.headers)
        assert me.status_code == 200 and me.json()["member"]["role"] == "manager", me.text
