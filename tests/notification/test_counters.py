"""Unread counters cannot drift: they change in the transaction that writes or reads receiver rows,
so after concurrent deliveries and reads they equal a recount."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from roomee.notification.models import unread_counter
from roomee.notification.processor import notification_id_for
from tests.notification.support import event, eventually, inbox, publish, team_platform, unread, wait_handled

EVENTS = 40


async def _all_unread(client, person) -> list[dict]:
    items, cursor = [], None
    while True:
        params = {"unread": "true", "limit": 7}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/api/v1/notifications", headers=person.headers, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        cursor = body["nextCursor"]
        if not cursor:
            return items


async def test_counters_equal_a_recount_after_concurrent_reads_and_deliveries(tmp_path):
    async with team_platform(tmp_path, members=2) as team:
        client, admin, (bob, carol) = team.client, team.admin, team.members
        for person in (bob, carol):  # start from zero: the set-up left onboarding notifications
            assert (await client.post("/api/v1/notifications/read-all", headers=person.headers)).status_code == 200
        envelopes = [event(admin, [bob, carol], payload={"id": f"page-{n}", "title": f"Page {n}"})
                     for n in range(EVENTS)]
        delivering = True
        reads_during_delivery = 0

        async def deliver():
            nonlocal delivering
            for start in range(0, EVENTS, 5):
                await publish(team.running, *envelopes[start:start + 5])
                await asyncio.sleep(0.05)
            await wait_handled(team.running, *envelopes, timeout=30)
            delivering = False

        async def bob_reads_one_by_one():
            nonlocal reads_during_delivery
            while delivering:
                items = await inbox(client, bob, unread="true", limit=3)
                marks = [client.post(f"/api/v1/notifications/{i['id']}/read", headers=bob.headers) for i in items]
                for response in await asyncio.gather(*marks):
                    assert response.status_code == 200, response.text
                    assert response.json()["readAt"] is not None
                    reads_during_delivery += 1
                await asyncio.sleep(0.01)

        async def carol_reads_all():
            while delivering:
                response = await client.post("/api/v1/notifications/read-all", headers=carol.headers)
                assert response.status_code == 200, response.text
                await asyncio.sleep(0.03)

        await asyncio.gather(deliver(), bob_reads_one_by_one(), carol_reads_all())
        assert reads_during_delivery > 0

        for person in (bob, carol):
            left = await _all_unread(client, person)
            assert await unread(client, person) == len(left)
            assert all(item["readAt"] is None for item in left)
        recount = await client.post("/api/v1/notifications/counters/recount", headers=admin.headers)
        assert recount.status_code == 200, recount.text
        assert recount.json() == {"workspaceId": admin.workspace_id, "corrected": 0}

        # Bob marks the same one read twice: counted once.
        bob_left = await _all_unread(client, bob)
        if bob_left:
            target = bob_left[0]["id"]
            before = await unread(client, bob)
            for _ in range(2):
                assert (await client.post(f"/api/v1/notifications/{target}/read", headers=bob.headers)).status_code == 200
            assert await unread(client, bob) == before - 1
        read_all = await client.post("/api/v1/notifications/read-all", headers=bob.headers)
        assert read_all.json()["unread"] == 0 and await unread(client, bob) == 0
        assert await _all_unread(client, bob) == []
        assert len(await inbox(client, bob, limit=100)) >= EVENTS
        assert notification_id_for(envelopes[0]["id"]) in {i["id"] for i in await inbox(client, bob, limit=100)}


async def test_recount_repairs_a_counter_and_needs_manage_workspace(tmp_path):
    async with team_platform(tmp_path, members=1) as team:
        client, admin, bob = team.client, team.admin, team.members[0]
        page = event(admin, [bob])
        await publish(team.running, page)
        await eventually(lambda: inbox(client, bob))
        expected = len(await _all_unread(client, bob))
        async with team.ctx.db.transaction() as session:
            await session.execute(
                sa.update(unread_counter).where(unread_counter.c.member_id == bob.member_id).values(count=99)
            )
        assert await unread(client, bob) == 99

        denied = await client.post("/api/v1/notifications/counters/recount", headers=bob.headers)
        assert denied.status_code == 403 and denied.json()["error"] == "permission_denied"
        repaired = await client.post("/api/v1/notifications/counters/recount", headers=admin.headers)
        assert repaired.json() == {"workspaceId": admin.workspace_id, "corrected": 1}
        assert await unread(client, bob) == expected
