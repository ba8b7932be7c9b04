"""Batch consumers: events arriving together share one transaction; one bad event is isolated."""

from __future__ import annotations

import json

from roomee.kit.events import EventConsumer, Message
from tests.kit.events.conftest import wait_until
from tests.kit.events.helpers import sample_envelope, unique_service


async def test_batches_share_a_transaction_and_a_poison_event_is_isolated(make_db, make_broker, queue_name):
    service = unique_service("batch")
    db = await make_db(service)
    broker = await make_broker()
    queue = queue_name()
    batches: list[list[str]] = []
    handled: list[str] = []
    poison = sample_envelope(999)

    async def batch_handler(session, items):
        ids = [envelope["id"] for envelope, _ in items]
        batches.append(ids)
        if poison["id"] in ids:
            raise RuntimeError("poison")
        handled.extend(ids)

    consumer = EventConsumer(db, broker, service, queue, ["roomee.batch.#"], None, batch_handler=batch_handler,
                             batch_size=50, batch_window_seconds=0.05)
    await consumer.start()
    try:
        envelopes = [sample_envelope(i) for i in range(120)]
        duplicate = envelopes[0]
        messages = [Message("roomee.batch.x", json.dumps(e).encode(), {}, e["id"]) for e in envelopes + [duplicate]]
        await broker.publish_batch(messages)
        await wait_until(lambda: len(handled) == 120, timeout=10)
        assert sorted(handled) == sorted(e["id"] for e in envelopes)  # the duplicate was handled once
        assert len(batches) < 20  # far fewer transactions than events

        healthy = sample_envelope(500)
        await broker.publish_batch([Message("roomee.batch.x", json.dumps(poison).encode(), {}, poison["id"]),
                                    Message("roomee.batch.x", json.dumps(healthy).encode(), {}, healthy["id"])])
        await wait_until(lambda: healthy["id"] in handled, timeout=10)
        assert poison["id"] not in handled  # it fails alone and goes down the retry path
    finally:
        await consumer.stop()
