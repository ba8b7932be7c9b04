from __future__ import annotations

import uuid
from collections.abc import Sequence

from prometheus_client import REGISTRY

from roomee.kit.events import Broker, Message, build_envelope


def amqp_count(service: str, routing_key: str, direction: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "amqp_messages_total",
        {"service": service, "routing_key": routing_key, "direction": direction, "status": status},
    )
    return value or 0.0


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def unique_service(label: str) -> str:
    return f"{label}{uuid.uuid4().hex[:6]}"


def sample_envelope(n: int = 0, **overrides) -> dict:
    values = dict(
        workspace_id="ws1",
        hotel_id="hotel1",
        workspace_name="Lobby",
        payload={"id": f"page{n}", "title": f"Page {n}"},
        actor={"id": "member1", "name": "Ann", "type": "member"},
        receiver_ids=["member2", "member3"],
    )
    values.update(overrides)
    return build_envelope("page.created", **values)


class FlakyBroker(Broker):
    """Delegates to a real broker, but its first ``failures`` publishes raise (a broker outage)."""

    def __init__(self, inner: Broker, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.attempts = 0
        self.exchange = inner.exchange
        self.retry_delays = inner.retry_delays
        self.prefetch = inner.prefetch

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self.inner.ping()

    async def publish_batch(self, messages: Sequence[Message]) -> list[Message]:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("simulated broker outage")
        return await self.inner.publish_batch(messages)

    async def dead_letter_counts(self, queues):
        return await self.inner.dead_letter_counts(queues)

    async def declare_queue(self, queue, bindings) -> None:
        await self.inner.declare_queue(queue, bindings)

    async def consume(self, queue, bindings, handler, prefetch=None):
        return await self.inner.consume(queue, bindings, handler, prefetch)

    async def dead_letters(self, queue, limit=100):
        return await self.inner.dead_letters(queue, limit)

    async def replay_dead_letters(self, queue, ids=None):
        return await self.inner.replay_dead_letters(queue, ids)

    async def delete_queue(self, queue) -> None:
        await self.inner.delete_queue(queue)
