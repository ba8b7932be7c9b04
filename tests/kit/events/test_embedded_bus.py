"""The embedded bus on its own (it backs the default configuration whatever this run's backend)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
import time

from roomee.kit.events import Delivery, Message
from roomee.kit.events.embedded import EmbeddedBroker
from tests.kit.events.conftest import wait_until


def msg(n: int, routing_key: str = "roomee.notification.page.created") -> Message:
    return Message(routing_key, json.dumps({"id": f"e{n}", "type": "page.created"}).encode(), {"n": n}, f"e{n}")


class Collector:
    def __init__(self, fail: bool = False) -> None:
        self.deliveries: list[Delivery] = []
        self.fail = fail

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if self.fail:
            raise RuntimeError("nope")

    @property
    def ids(self) -> list[str]:
        return [d.message_id for d in self.deliveries]


async def test_messages_and_bindings_survive_a_restart(tmp_path):
    path = tmp_path / "bus.db"
    first = EmbeddedBroker(path, "ex")
    await first.start()
    # Declared with no consumer running: messages published now must wait for it.
    await first.declare_queue("notification_queue", ["roomee.notification.#"])
    await first.publish_batch([msg(1), msg(2), msg(3, "roomee.storage.media")])
    await first.close()

    second = EmbeddedBroker(path, "ex")
    await second.start()
    try:
        await second.publish_batch([msg(4)])  # bindings came back from the file
        collector = Collector()
        await second.consume("notification_queue", ["roomee.notification.#"], collector)
        await wait_until(lambda: len(collector.deliveries) >= 3, timeout=5)
        await asyncio.sleep(0.1)
        assert collector.ids == ["e1", "e2", "e4"]
        first_delivery = collector.deliveries[0]
        assert first_delivery.routing_key == "roomee.notification.page.created"
        assert first_delivery.headers == {"n": 1}
        assert first_delivery.attempt == 1
        assert first_delivery.queue == "notification_queue"
        assert first_delivery.envelope == {"id": "e1", "type": "page.created"}
    finally:
        await second.close()


async def test_a_pending_retry_survives_a_restart(tmp_path):
    path = tmp_path / "bus.db"
    broker = EmbeddedBroker(path, "ex")
    await broker.start()
    failing = Collector(fail=True)
    await broker.consume("q", ["a.#"], failing)
    await broker.publish_batch([msg(1, "a.b")])
    await wait_until(lambda: len(failing.deliveries) >= 1, timeout=5)
    failed_at = time.monotonic()
    await asyncio.sleep(0.1)
    await broker.close()

    broker = EmbeddedBroker(path, "ex")
    await broker.start()
    try:
        passing = Collector()
        await broker.consume("q", ["a.#"], passing)
        await wait_until(lambda: len(passing.deliveries) >= 1, timeout=5)
        assert passing.deliveries[0].attempt == 2
        assert time.monotonic() - failed_at >= 0.9  # still waited for its 1 s delay
    finally:
        await broker.close()


async def test_an_expired_claim_of_a_crashed_process_is_redelivered(tmp_path):
    path = tmp_path / "bus.db"
    broker = EmbeddedBroker(path, "ex", poll_interval=0.1)
    await broker.start()
    try:
        await broker.declare_queue("q", ["a"])
        await broker.publish_batch([msg(1, "a")])
        # Another process claimed it, then died: its lease runs out in 0.5 s and is never renewed.
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE bus_messages SET claimed_by = 'dead:1', claimed_until = ?", (time.time() + 0.5,))
        collector = Collector()
        started = time.monotonic()
        await broker.consume("q", ["a"], collector)
        await wait_until(lambda: len(collector.deliveries) >= 1, timeout=5)
        assert time.monotonic() - started >= 0.4
    finally:
        await broker.close()


async def test_another_process_sharing_the_file_is_heard(tmp_path):
    path = tmp_path / "bus.db"
    broker = EmbeddedBroker(path, "ex")
    await broker.start()
    try:
        collector = Collector()
        await broker.consume("q", ["x.*"], collector)
        script = textwrap.dedent(
            f"""
            import asyncio
            from roomee.kit.events import Message
            from roomee.kit.events.embedded import EmbeddedBroker

            async def main():
                broker = EmbeddedBroker({str(path)!r}, "ex")
                await broker.start()
                await broker.publish_batch([Message("x.y", b'{{"id": "p1", "type": "t"}}', {{}}, "p1")])
                await broker.close()

            asyncio.run(main())
            """
        )
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stderr=subprocess.PIPE)
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        await wait_until(lambda: len(collector.deliveries) >= 1, timeout=5)
        assert collector.ids == ["p1"]
    finally:
        await broker.close()


async def test_prefetch_bounds_concurrent_handlers(tmp_path):
    broker = EmbeddedBroker(tmp_path / "bus.db", "ex")
    await broker.start()
    running = 0
    peak = 0
    done = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        done += 1

    try:
        await broker.consume("q", ["#"], handler, prefetch=5)
        await broker.publish_batch([msg(n, "k") for n in range(40)])
        await wait_until(lambda: done >= 40, timeout=10)
        assert peak == 5
    finally:
        await broker.close()
