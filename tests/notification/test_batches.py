"""The notification queue is consumed in batches (one transaction for the events that arrive
together, set-based lookups and writes): the outcome must be that of handling them one by one."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from roomee.kit.events import build_envelope
from roomee.notification.dispatcher import PUSH_BATCH, RECIPIENTS_PER_JOB, delivery_jobs
from roomee.notification.models import notification_receiver, unread_counter
from roomee.notification.processor import notification_id_for
from roomee.notification.repository import COPY_AT, DirectoryRepository, PreferenceRepository
from tests.notification.support import (
    event,
    eventually,
    handled,
    inbox,
    publish,
    set_clock,
    team_platform,
    unread,
    wait_handled,
)


def member_updated(person, *, locale: str) -> dict:
    return build_envelope(
        "member.updated",
        workspace_id=person.workspace_id,
        hotel_id=person.hotel_id,
        payload={"member": {"id": person.member_id, "firstName": "Bob", "lastName": "Staff",
                            "email": person.email, "locale": locale}},
        channels=(),
        actor={"id": "members", "name": "Roomee", "type": "system"},
    )


async def test_a_batch_sees_the_directory_changes_of_the_events_before_it(tmp_path):
    async with team_platform(tmp_path, members=2) as team:
        client, admin, (bob, carol) = team.client, team.admin, team.members
        to_french = member_updated(bob, locale="fr")
        await publish(team.running, to_french)
        await wait_handled(team.running, to_french)

        before = event(admin, [bob, carol], payload={"id": "page-a", "title": "Avant"})
        to_english = member_updated(bob, locale="en")
        after = event(admin, [bob], payload={"id": "page-b", "title": "After"})
        others = [event(admin, [carol], payload={"id": f"page-{n}", "title": f"Autre {n}"}) for n in range(5)]
        # One publish: the consumer takes them as one batch (or several; the outcome is the same).
        await publish(team.running, before, to_english, after, *others, before)
        await wait_handled(team.running, before, to_english, after, *others)

        titles = {item["data"]["title"]: item["title"] for item in await inbox(client, bob, limit=50)}
        assert titles["Avant"] == "Nouvel article"  # bob still read French then
        assert titles["After"] == "New article"  # the directory change came first
        carol_items = await inbox(client, carol, limit=50)
        assert sum(1 for item in carol_items if item["data"]["title"] == "Avant") == 1  # duplicate skipped
        assert {f"Autre {n}" for n in range(5)} <= {item["data"]["title"] for item in carol_items}

        for person in (bob, carol):
            assert await unread(client, person) == len(await inbox(client, person, unread="true", limit=100))
        recount = await client.post("/api/v1/notifications/counters/recount", headers=admin.headers)
        assert recount.json() == {"workspaceId": admin.workspace_id, "corrected": 0}


async def test_a_failing_event_holds_back_only_itself(tmp_path):
    async with team_platform(tmp_path, members=1) as team:
        client, admin, bob = team.client, team.admin, team.members[0]
        factory = team.ctx.state["factory"]
        render = factory.render

        def failing_render(event_type, locale, context):
            if context.get("title") == "poison":
                raise RuntimeError("this event cannot be rendered")
            return render(event_type, locale, context)

        factory.render = failing_render
        try:
            good = [event(admin, [bob], payload={"id": f"page-{n}", "title": f"Good {n}"}) for n in range(6)]
            poison = event(admin, [bob], payload={"id": "page-x", "title": "poison"})
            await publish(team.running, *good[:3], poison, *good[3:])
            await wait_handled(team.running, *good)
            assert not await handled(team.running, poison)
            titles = {item["data"]["title"] for item in await inbox(client, bob, limit=50)}
            assert {f"Good {n}" for n in range(6)} <= titles and "poison" not in titles
        finally:
            factory.render = render
        # Its retry (after 1 s) succeeds now that it can be rendered.
        await wait_handled(team.running, poison, timeout=15)
        await eventually(lambda: _titled(client, bob, "poison"))
        assert await unread(client, bob) == len(await inbox(client, bob, unread="true", limit=100))


async def _titled(client, person, title: str) -> bool:
    return any(item["data"]["title"] == title for item in await inbox(client, person, limit=50))


def _push_request(notification_id: str, workspace_id: str, subscriptions: list[str]) -> dict:
    return {"notificationId": notification_id, "workspaceId": workspace_id, "ecosystemId": "hotel", "locale": "fr",
            "title": "t", "body": "b", "data": {}, "subscriptionIds": subscriptions}


def test_delivery_jobs_group_requests_per_workspace_within_their_limits():
    fan_out = [_push_request("n-big", "w1", [f"s{i}-{j}" for j in range(PUSH_BATCH)]) for i in range(50)]
    jobs = delivery_jobs("push", fan_out)
    # 100 000 devices: ten jobs of five 2 000-device requests, not one 4 MB message.
    assert [len(job["payload"]["requests"]) for _, job in jobs] == [5] * 10
    assert all(sum(len(r["subscriptionIds"]) for r in job["payload"]["requests"]) <= RECIPIENTS_PER_JOB
               for _, job in jobs)

    singles = [_push_request(f"n{i}", "w1" if i % 2 else "w2", [f"device-{i}"]) for i in range(240)]
    jobs = delivery_jobs("push", singles)
    assert sorted(len(job["payload"]["requests"]) for _, job in jobs) == [20, 20, 50, 50, 50, 50]
    for _, job in jobs:  # a job never mixes workspaces, and says which it belongs to
        assert {r["workspaceId"] for r in job["payload"]["requests"]} == {job["workspaceId"]}
    assert {routing_key for routing_key, _ in jobs} == {"roomee.delivery.push"}
    # Planned again (a redelivered event), the same requests make the same jobs.
    assert [job["id"] for _, job in delivery_jobs("push", singles)] == [job["id"] for _, job in jobs]
    assert len({job["id"] for _, job in jobs}) == len(jobs)


async def test_a_large_fan_out_writes_exact_rows_and_counters_and_keeps_each_members_preferences(tmp_path):
    """From ``COPY_AT`` receivers the rows go by COPY on PostgreSQL; members with preferences (read
    with the directory in one query) still get what those allow, and counters add up exactly."""
    async with team_platform(tmp_path, members=0) as team:
        workspace = team.admin.workspace_id
        receivers = [f"big-{n:05d}" for n in range(COPY_AT + 10)]
        silent, quiet, busy = receivers[:3]
        now = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
        set_clock(team.running, now)
        async with team.ctx.db.transaction() as session:
            await DirectoryRepository(session).upsert_members(
                [{"member_id": m, "workspace_id": workspace, "user_id": m, "name": "", "email": None, "locale": None,
                  "timezone": None, "deleted_at": None, "updated_at": now} for m in receivers],
                columns=("workspace_id", "user_id", "name", "email", "locale", "timezone", "deleted_at"),
            )
            preferences = PreferenceRepository(session)
            await preferences.upsert({"member_id": silent, "workspace_id": workspace, "is_global_silent": True,
                                      "category_prefs": {}, "quiet_mode": "skip", "updated_at": now})
            await preferences.upsert({"member_id": quiet, "workspace_id": workspace, "is_global_silent": False,
                                      "category_prefs": {}, "quiet_start": "11:00", "quiet_end": "13:00",
                                      "quiet_timezone": "UTC", "quiet_mode": "defer", "updated_at": now})
            # A counter from earlier notifications: the fan-out adds to it.
            await session.execute(sa.insert(unread_counter).values(
                member_id=busy, workspace_id=workspace, count=3, updated_at=now))
        fan_out = event(team.admin, receivers, payload={"id": "page-big", "title": "Big"})
        also_busy = event(team.admin, [busy], payload={"id": "page-small", "title": "Small"})
        await publish(team.running, fan_out, also_busy)
        await wait_handled(team.running, fan_out, also_busy, timeout=30)

        r, c = notification_receiver.c, unread_counter.c
        async with team.ctx.db.transaction() as session:
            rows = (await session.execute(
                sa.select(r.member_id, r.notification_id, r.channels).where(r.workspace_id == workspace)
            )).all()
            counters = dict((await session.execute(
                sa.select(c.member_id, c.count).where(c.workspace_id == workspace)
            )).all())
        big = notification_id_for(fan_out["id"])
        channels = {m: ch for m, n, ch in rows if n == big}
        assert sorted(channels) == receivers[1:]  # the silent member gets nothing
        assert channels[quiet] == "socket,push:deferred"
        assert {ch for m, ch in channels.items() if m != quiet} == {"socket,push"}
        assert [m for m, n, _ in rows if n == notification_id_for(also_busy["id"])] == [busy]
        assert {m: n for m, n in counters.items() if m in receivers} == {**{m: 1 for m in receivers[1:]}, busy: 3 + 2}
