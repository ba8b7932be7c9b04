"""Provider failures: a push job is retried after 1 s, 2 s and 4 s, dead-lettered, then replayed
with the operator's CLI and delivered; every attempt is on record."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

from roomee.kit.clock import as_utc
from roomee.kit.events import Message
from roomee.notification.dispatcher import delivery_jobs
from roomee.notification.processor import notification_id_for
from tests.notification.support import (
    attempts,
    event,
    eventually,
    inbox,
    publish,
    register_device,
    team_platform,
    wait_attempts,
)

PUSH_QUEUE = "notification_push_queue"


def _sent_total(metrics: str, channel: str, status: str) -> float:
    match = re.search(
        rf'^notifications_sent_total{{channel="{channel}",status="{status}"}} ([0-9.e+]+)$', metrics, re.MULTILINE
    )
    return float(match.group(1)) if match else 0.0


async def _cli(running, *args: str) -> str:
    """Run the ``roomee`` command against this platform's broker, as an operator would."""
    settings = running.settings
    env = {**os.environ, "ROOMEE_DATA_DIR": str(settings.data_dir), "ROOMEE_EXCHANGE": settings.exchange,
           "ROOMEE_QUEUE_PREFIX": settings.queue_prefix, "ROOMEE_LOG_LEVEL": "WARNING"}
    if settings.broker_url:
        env["ROOMEE_BROKER_URL"] = settings.broker_url
    roomee = Path(sys.executable).with_name("roomee")
    process = await asyncio.create_subprocess_exec(
        str(roomee), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_provider_5xx_is_retried_at_1_2_4_s_then_dead_lettered_then_replayed(tmp_path):
    async with team_platform(tmp_path, members=1) as team:
        client, bob = team.client, team.members[0]
        await register_device(client, bob, "bob-phone")
        async with team.running.client() as http:
            before = (await http.get("/metrics")).text

        team.onesignal.fail_next(4, status=503)
        page = event(team.admin, [bob])
        await publish(team.running, page)

        failed = await wait_attempts(team.running, page, 4, timeout=15)
        assert [(r["status"], r["attempt"], r["error"]) for r in failed] == [("failed", n, "HTTP 503") for n in (1, 2, 3, 4)]
        times = [as_utc(r["created_at"]) for r in failed]
        gaps = [(later - earlier).total_seconds() for earlier, later in zip(times, times[1:])]
        for gap, expected in zip(gaps, (1, 2, 4)):
            assert expected - 0.1 <= gap <= expected + 0.9, gaps

        queue = team.running.settings.queue_prefix + PUSH_QUEUE
        broker = team.running.platform.broker
        dead = await eventually(lambda: broker.dead_letters(queue))
        assert len(dead) == 1 and dead[0].routing_key == "roomee.delivery.push"
        # The member still has it in the app: only the push waits.
        assert [i["id"] for i in await inbox(client, bob)][0] == notification_id_for(page["id"])

        listed = await _cli(team.running, "events", "dead-letters", "--queue", PUSH_QUEUE)
        assert dead[0].id in listed
        assert "replayed 1 event" in await _cli(team.running, "events", "replay", "--queue", PUSH_QUEUE)

        rows = await wait_attempts(team.running, page, 5)
        assert [(r["status"], r["attempt"]) for r in rows][-1] == ("sent", 5)
        assert rows[-1]["recipients"] == ["bob-phone"] and rows[-1]["provider_message_id"]
        requests = team.onesignal.requests_to("POST", "/notifications")
        assert len(requests) == 5
        # Every try of the job carries the same idempotency key: OneSignal sends it once.
        assert len({r.json["idempotency_key"] for r in requests}) == 1
        assert await broker.dead_letters(queue) == []

        async with team.running.client() as http:
            after = (await http.get("/metrics")).text
        assert _sent_total(after, "push", "failed") - _sent_total(before, "push", "failed") == 4
        assert _sent_total(after, "push", "sent") - _sent_total(before, "push", "sent") == 1
        await asyncio.sleep(0.3)
        assert len(await attempts(team.running, page)) == 5


async def test_a_job_of_several_notifications_retries_only_the_request_that_failed(tmp_path):
    """Notifications planned in one transaction share a push job; a 5xx on one of its requests
    retries the job, and the retry sends that request again (same idempotency key), not the
    ones OneSignal accepted."""
    async with team_platform(tmp_path, members=0) as team:
        requests = [
            {"notificationId": f"n-{n}", "workspaceId": team.admin.workspace_id, "ecosystemId": team.admin.hotel_id,
             "locale": "fr", "title": f"Titre {n}", "body": f"Corps {n}", "data": {"notificationId": f"n-{n}"},
             "subscriptionIds": [f"device-{n}"]}
            for n in (1, 2, 3)
        ]
        [(routing_key, job)] = delivery_jobs("push", requests)
        team.onesignal.fail_next(1, status=503)  # whichever request arrives first
        await team.running.platform.broker.publish_batch(
            [Message(routing_key, json.dumps(job).encode(), message_id=job["id"])]
        )

        async def all_sent():
            rows = [r for n in (1, 2, 3) for r in await attempts(team.running, f"n-{n}")]
            return rows if sum(r["status"] == "sent" for r in rows) == 3 else None

        rows = await eventually(all_sent, timeout=10)
        assert len(rows) == 4 and {r["job_id"] for r in rows} == {job["id"]}
        failed = [r for r in rows if r["status"] == "failed"]
        assert [(r["attempt"], r["error"]) for r in failed] == [(1, "HTTP 503")]
        retried = [r for r in rows if r["notification_id"] == failed[0]["notification_id"] and r["status"] == "sent"]
        assert [r["attempt"] for r in retried] == [2]
        assert sorted(r["attempt"] for r in rows if r["notification_id"] != failed[0]["notification_id"]) == [1, 1]
        posted = team.onesignal.requests_to("POST", "/notifications")
        assert len(posted) == 4  # three requests, one of them twice
        keys = [r.json["idempotency_key"] for r in posted]
        assert len(set(keys)) == 3
