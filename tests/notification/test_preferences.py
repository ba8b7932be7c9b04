"""The preference filter (seed Flow 6) through the REST API and the running pipeline: global
silence, category x channel, quiet hours across midnight in two timezones, skip vs defer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from roomee.notification.processor import notification_id_for
from tests.fixtures.events import event_tap
from tests.fixtures.fakes import onesignal_fake
from tests.fixtures.people import Person, invite_and_join, make_admin
from tests.fixtures.platform import make_settings, running_platform, sign_in
from tests.notification.support import (
    event,
    inbox,
    publish,
    pushed_to,
    register_device,
    set_clock,
    set_preferences,
    team_platform,
    wait_delivered,
    wait_directory,
    wait_handled,
)

ALL_CHANNELS = ["push", "socket", "email"]


async def test_preferences_read_defaults_replace_and_reject_bad_input(tmp_path):
    async with team_platform(tmp_path, members=1) as team:
        client, bob = team.client, team.members[0]
        defaults = (await client.get("/api/v1/preferences", headers=bob.headers)).json()
        assert defaults["memberId"] == bob.member_id and defaults["workspaceId"] == bob.workspace_id
        assert defaults["isGlobalSilent"] is False and defaults["quietHours"] is None
        assert set(defaults["categoryPrefs"]) == {"page", "comment", "like", "member", "workspace", "hotel"}
        assert defaults["categoryPrefs"]["page"] == {"app": True, "push": True, "email": False}  # articles: email asked for

        saved = await set_preferences(
            client, bob, isGlobalSilent=False, categoryPrefs={"like": {"push": False}},
            quietHours={"start": "22:00", "end": "07:00", "timezone": "Europe/Paris", "mode": "defer"},
        )
        assert saved["categoryPrefs"]["like"] == {"app": True, "push": False, "email": True}
        assert saved["quietHours"] == {"start": "22:00", "end": "07:00", "timezone": "Europe/Paris", "mode": "defer"}
        assert (await client.get("/api/v1/preferences", headers=bob.headers)).json() == saved
        # The admin's preferences are untouched.
        assert (await client.get("/api/v1/preferences", headers=team.admin.headers)).json()["quietHours"] is None

        bad_bodies = [
            {"categoryPrefs": {"weather": {"push": False}}},
            {"categoryPrefs": {"page": {"push": "sometimes"}}},
            {"quietHours": {"start": "25:00", "end": "07:00"}},
            {"quietHours": {"start": "22h", "end": "07:00"}},
            {"quietHours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Olympus"}},
            {"quietHours": {"start": "22:00", "end": "07:00", "timezone": "America"}},  # a tzdata directory
            {"quietHours": {"start": "22:00", "end": "22:00"}},
            {"quietHours": {"start": "22:00", "end": "07:00", "mode": "later"}},
            {"isGlobalSilent": "perhaps"},
        ]
        for body in bad_bodies:
            response = await client.put("/api/v1/preferences", json=body, headers=bob.headers)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["error"] == "validation_error"
        assert (await client.get("/api/v1/preferences", headers=bob.headers)).json() == saved

        cleared = await set_preferences(client, bob, quietHours=None)
        assert cleared["quietHours"] is None and cleared["categoryPrefs"]["like"]["push"] is True


async def test_global_silence_and_category_by_channel(tmp_path):
    async with team_platform(tmp_path, members=3) as team:
        client, admin, (bob, carol, dan) = team.client, team.admin, team.members
        for person, device in ((admin, "ada-phone"), (bob, "bob-phone"), (carol, "carol-phone"), (dan, "dan-phone")):
            await register_device(client, person, device)
        await set_preferences(client, bob, isGlobalSilent=True)
        await set_preferences(client, carol, categoryPrefs={"page": {"app": False, "push": True, "email": False}})
        await set_preferences(client, dan, categoryPrefs={"page": {"app": True, "push": False, "email": True}})

        page = event(admin, [admin, bob, carol, dan], channels=ALL_CHANNELS)
        comment = event(admin, [admin, bob, carol, dan], type="comment.created", channels=ALL_CHANNELS,
                        payload={"id": "c1", "page": {"id": "page-1", "title": "Menu"}})
        await publish(team.running, page, comment)
        await wait_delivered(team.running, team.onesignal, page, push=["ada-phone", "carol-phone"],
                             email=["ada@hotel.example.com", "dan@hotel.example.com"])
        await wait_delivered(team.running, team.onesignal, comment, push=["ada-phone", "carol-phone", "dan-phone"],
                             email=["ada@hotel.example.com", "carol@hotel.example.com", "dan@hotel.example.com"])

        def types(items):
            return sorted(i["type"] for i in items if i["type"] in ("page.created", "comment.created"))

        assert types(await inbox(client, admin)) == ["comment.created", "page.created"]
        assert types(await inbox(client, bob)) == []
        assert types(await inbox(client, carol)) == ["comment.created"]
        assert types(await inbox(client, dan)) == ["comment.created", "page.created"]

        # The email itself: the rendered template, text and HTML, from the file backend.
        mails = sorted((team.running.settings.data_dir / "mail").glob(f"*-{notification_id_for(page['id'])}-*.eml"))
        assert len(mails) == 2
        text = mails[0].read_text()
        assert "Subject: Nouvel article" in text and "Content-Type: text/html" in text


async def test_quiet_hours_across_midnight_in_two_timezones_skip_and_defer(tmp_path):
    async with team_platform(tmp_path, members=3) as team:
        client, admin, (bob, carol, dan) = team.client, team.admin, team.members
        for person, device in ((admin, "ada-phone"), (bob, "bob-phone"), (carol, "carol-phone"), (dan, "dan-phone")):
            await register_device(client, person, device)
        # Carol lives in New York: her quiet hours follow her member timezone.
        moved = await client.patch(f"/members/{carol.member_id}", json={"timezone": "America/New_York"},
                                   headers=carol.headers)
        assert moved.status_code == 200, moved.text
        await wait_directory(team.running, [carol], timezone="America/New_York")
        quiet = {"start": "22:00", "end": "07:00"}
        await set_preferences(client, bob, quietHours={**quiet, "timezone": "Europe/Paris", "mode": "defer"})
        await set_preferences(client, carol, quietHours={**quiet, "mode": "skip"})
        await set_preferences(client, dan, quietHours={**quiet, "timezone": "America/New_York", "mode": "defer"})
        everyone = [admin, bob, carol, dan]

        # 22:30 UTC: 23:30 in Paris (quiet, before midnight), 17:30 in New York (not quiet).
        set_clock(team.running, datetime(2026, 1, 15, 22, 30, tzinfo=UTC))
        evening = event(admin, everyone, channels=ALL_CHANNELS)
        await publish(team.running, evening)
        await wait_delivered(team.running, team.onesignal, evening, push=["ada-phone", "carol-phone", "dan-phone"],
                             email=["ada@hotel.example.com", "carol@hotel.example.com", "dan@hotel.example.com"])

        # 04:30 UTC: 05:30 in Paris (quiet, after midnight), 23:30 in New York (quiet, before midnight).
        set_clock(team.running, datetime(2026, 1, 16, 4, 30, tzinfo=UTC))
        night = event(admin, everyone, channels=ALL_CHANNELS)
        await publish(team.running, night)
        await wait_delivered(team.running, team.onesignal, night, push=["ada-phone"], email=["ada@hotel.example.com"])

        # Quiet hours never hold back the app: everyone has both in the list.
        for person in everyone:
            ids = {i["id"] for i in await inbox(client, person)}
            assert {notification_id_for(evening["id"]), notification_id_for(night["id"])} <= ids

        # 06:00:30 UTC: 07:00 has passed in Paris, so Bob's deferred push and email go out (both
        # events); Dan's New York night is not over, and Carol skipped hers.
        set_clock(team.running, datetime(2026, 1, 16, 6, 0, 30, tzinfo=UTC))
        await wait_delivered(team.running, team.onesignal, evening,
                             push=["ada-phone", "bob-phone", "carol-phone", "dan-phone"],
                             email=["ada@hotel.example.com", "bob@hotel.example.com", "carol@hotel.example.com",
                                    "dan@hotel.example.com"])
        await wait_delivered(team.running, team.onesignal, night, push=["ada-phone", "bob-phone"],
                             email=["ada@hotel.example.com", "bob@hotel.example.com"])

        # 12:00:30 UTC: 07:00 in New York: Dan's night push and email arrive; Carol's never do.
        set_clock(team.running, datetime(2026, 1, 16, 12, 0, 30, tzinfo=UTC))
        await wait_delivered(team.running, team.onesignal, night, push=["ada-phone", "bob-phone", "dan-phone"],
                             email=["ada@hotel.example.com", "bob@hotel.example.com", "dan@hotel.example.com"])
        await asyncio.sleep(1.5)  # another release cycle: nothing else comes
        await wait_delivered(team.running, team.onesignal, night, push=["ada-phone", "bob-phone", "dan-phone"],
                             email=["ada@hotel.example.com", "bob@hotel.example.com", "dan@hotel.example.com"],
                             timeout=0.5)


async def test_deferred_deliveries_survive_a_restart(tmp_path):
    async with onesignal_fake() as fake:
        settings = make_settings(tmp_path, push_backend="onesignal", onesignal_url=fake.url,
                                 onesignal_app_id="roomee-app", onesignal_api_key="test-key")
        async with running_platform(settings) as running, running.client() as client, event_tap(running) as tap:
            admin = await make_admin(running, client, "ada@hotel.example.com")
            bob = await invite_and_join(client, tap, admin, "bob@hotel.example.com")
            await wait_directory(running, [admin, bob])
            await register_device(client, bob, "bob-phone")
            await set_preferences(client, bob, quietHours={"start": "22:00", "end": "07:00", "timezone": "UTC",
                                                           "mode": "defer"})
            set_clock(running, datetime(2030, 3, 1, 23, 0, tzinfo=UTC))
            page = event(admin, [bob])
            await publish(running, page)
            await wait_handled(running, page)
            assert fake.requests == []

        # A new process on the same databases: the held push goes out when the night ends there.
        async with running_platform(settings) as running, running.client() as client:
            await asyncio.sleep(1.5)
            assert fake.requests == []  # still night for the restarted service? its clock is real: 2030 is ahead
            set_clock(running, datetime(2030, 3, 2, 7, 0, 1, tzinfo=UTC))
            await fake.wait_for_requests(1)
            assert pushed_to(fake, notification_id_for(page["id"])) == ["bob-phone"]
            bob = Person(bob.email, bob.password, await sign_in(client, bob.email, bob.password))
            assert [i["id"] for i in await inbox(client, bob)][0] == notification_id_for(page["id"])
