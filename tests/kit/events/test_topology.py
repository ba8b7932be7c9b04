"""The whole event topology exists before anything is published: declared by every process before
its relays start, and by ``roomee migrate``. An event published while its consumer's process is
not running yet waits in the consumer's queue instead of being dropped."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from roomee.kit.events import Message, broker_from_settings
from roomee.kit.platform import Platform
from tests.fixtures.people import make_admin
from tests.fixtures.platform import make_settings, running_platform


async def _one_delivery(broker, queue: str, bindings: list[str], timeout: float = 15.0):
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    async def handler(delivery):
        if not got.done():
            got.set_result(delivery)

    subscription = await broker.consume(queue, bindings, handler)
    try:
        return await asyncio.wait_for(got, timeout)
    finally:
        await subscription.cancel()


async def test_an_event_published_before_its_consumer_started_waits_in_its_queue(tmp_path):
    settings = make_settings(tmp_path)
    topology = Platform(settings, []).event_topology()
    queue = settings.queue_prefix + "notification_queue"
    assert topology[queue] == ["roomee.notification.#"]
    async with running_platform(settings, target="auth,members") as running, running.client() as client:
        admin = await make_admin(running, client, "admin@topology.example.com")
        invited = await client.post("/members/", json={"email": "late@topology.example.com"}, headers=admin.headers)
        assert invited.status_code == 201, invited.text
        # The notification target runs nowhere yet; its queue was declared by this process.
        delivery = await _one_delivery(running.platform.broker, queue, topology[queue])
    assert delivery.routing_key.startswith("roomee.notification.")  # workspace.created of the bootstrap first


def test_roomee_migrate_declares_every_queue(tmp_path):
    settings = make_settings(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMEE_")}
    for name in ("data_dir", "database_url", "broker_url", "exchange", "queue_prefix", "schema_prefix"):
        value = getattr(settings, name)
        if value:
            env[f"ROOMEE_{name.upper()}"] = str(value)
    out = subprocess.run([sys.executable, "-m", "roomee.cli", "migrate"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "queues declared" in out.stdout

    async def published_then_consumed():
        broker = broker_from_settings(settings)
        await broker.start()
        try:
            await broker.publish_batch([Message("roomee.storage.media", b'{"id": "x"}')])
            return await _one_delivery(broker, settings.queue_prefix + "media_storage_queue", ["roomee.storage.media"])
        finally:
            await broker.close()

    assert asyncio.run(published_then_consumed()).routing_key == "roomee.storage.media"
