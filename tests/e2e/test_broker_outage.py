"""Issue 7 §13: with RabbitMQ stopped ~10 s in the middle of 300 invitations, the inviter's socket
gets every ``notification:new`` (nothing dropped after the reconnection), and no emit counts as
failed. RabbitMQ is required by this test on both backends (the database follows the backend)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from roomee.kit.metrics import notifications_sent_total
from roomee.notification.channels import NOTIFICATION_NEW
from tests.fixtures import platform as fixtures
from tests.fixtures.people import make_admin
from tests.fixtures.platform import make_settings, running_platform
from tests.notification.support import SocketInbox, eventually

INVITATIONS = 300
OUTAGE_SECONDS = 10.0


async def rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)}: {err.decode()}"


def _on_rabbitmq(tmp_path):
    n = next(fixtures._counter)
    return make_settings(
        tmp_path, broker_url=fixtures.AMQP_URL, exchange=f"roomee-test-{fixtures.RUN_ID}-{n}",
        queue_prefix=f"t{fixtures.RUN_ID}-{n}-",
    )


def _failed_socket_emits() -> float:
    return notifications_sent_total.labels("socket", "failed")._value.get()


@pytest.mark.timeout(300)
async def test_every_socket_notification_arrives_across_a_broker_outage(tmp_path, caplog):
    async with running_platform(_on_rabbitmq(tmp_path)) as running, running.client() as client:
        admin = await make_admin(running, client, "admin@outage.example.com")
        socket = await SocketInbox(NOTIFICATION_NEW).connect(running, admin)
        failed_before = _failed_socket_emits()

        async def invite(numbers: range) -> None:
            for number in numbers:
                response = await client.post("/members/", json={"email": f"staff{number}@outage.example.com"},
                                             headers=admin.headers)
                assert response.status_code == 201, response.text

        try:
            third = INVITATIONS // 3
            await invite(range(0, third))
            caplog.clear()
            caplog.set_level(logging.INFO)
            await rabbitmqctl("stop_app")
            stopped = time.monotonic()
            try:
                await invite(range(third, 2 * third))  # writes keep working: the outbox holds the events
                await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
            finally:
                await rabbitmqctl("start_app")
                await rabbitmqctl("await_startup", "--timeout", "60")
            await invite(range(2 * third, INVITATIONS))

            async def all_arrived():
                onboardings = [p for p in socket.received[NOTIFICATION_NEW] if p["type"] == "member.onboarding"]
                return len(onboardings) == INVITATIONS or None

            await eventually(all_arrived, timeout=120)
            got = [p for p in socket.received[NOTIFICATION_NEW] if p["type"] == "member.onboarding"]
            assert len({p["id"] for p in got}) == INVITATIONS
            assert _failed_socket_emits() == failed_before
            # A quiet outage: no error, no traceback; a warning when each part loses the broker.
            records = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert not [r for r in records if r.levelno >= logging.ERROR or r.exc_info], [r.getMessage() for r in records]
            assert not [r for r in caplog.records if r.name.startswith(("aiormq", "aio_pika"))]
            assert len(records) <= 2 * len(running.platform.services) + 6, [r.getMessage() for r in records]
        finally:
            await socket.close()
