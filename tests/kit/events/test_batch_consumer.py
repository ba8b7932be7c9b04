"""Batch consumers: events arriving together share one transaction; one bad event is isolated."""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa

from roomee.kit.events import EventConsumer, Message, emit
from roomee.kit.events.tables import outbox_table
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


async def test_a_batch_handler_fails_some_deliveries_and_commits_the_rest(
    make_events_settings, make_db, make_broker, queue_name
):
    """Returned failures go down the retry path alone; what the handler wrote for the batch
    (here an outbox row per attempt) commits, and the others are never handled again."""
    service = unique_service("partial")
    settings = make_events_settings(retry_delays_ms=[50, 50, 50])
    db = await make_db(service, settings)
    broker = await make_broker(settings)
    queue = queue_name()
    calls: list[tuple[str, int]] = []
    flaky = sample_envelope(7)

    async def batch_handler(session, items):
        failures = {}
        for index, (envelope, delivery) in enumerate(items):
            calls.append((envelope["id"], delivery.attempt))
            await emit(session, "roomee.attempts.x", {"id": f"{envelope['id']}:{delivery.attempt}"})
            if envelope["id"] == flaky["id"] and delivery.attempt < 3:
                failures[index] = RuntimeError("provider 503")
        return failures

    consumer = EventConsumer(db, broker, service, queue, ["roomee.partial.#"], None, batch_handler=batch_handler,
                             batch_size=50, batch_window_seconds=0.05)
    await consumer.start()
    try:
        envelopes = [sample_envelope(i) for i in range(5)] + [flaky]
        await broker.publish_batch([Message("roomee.partial.x", json.dumps(e).encode(), {}, e["id"]) for e in envelopes])
        await wait_until(lambda: (flaky["id"], 3) in calls, timeout=10)
        await asyncio.sleep(0.3)  # a redelivery of a committed event would show up here
        others = [c for c in calls if c[0] != flaky["id"]]
        assert sorted(others) == sorted((e["id"], 1) for e in envelopes[:5])
        assert [c for c in calls if c[0] == flaky["id"]] == [(flaky["id"], 1), (flaky["id"], 2), (flaky["id"], 3)]
        async with db.transaction() as session:
            bodies = (await session.execute(sa.select(outbox_table.c.body))).scalars().all()
        recorded = sorted(json.loads(body)["id"] for body in bodies)
        assert recorded == sorted([f"{e['id']}:1" for e in envelopes] + [f"{flaky['id']}:2", f"{flaky['id']}:3"])
    finally:
        await consumer.stop()


async def test_a_batch_is_one_consumer_span_linked_to_each_message_trace(make_db, make_broker, queue_name):
    from opentelemetry import propagate, trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from roomee.kit.observability import configure_tracing
    from roomee.kit.settings import Settings

    provider = configure_tracing(Settings(otel_exporter="none"), "tests")
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    service = unique_service("traced")
    db = await make_db(service)
    broker = await make_broker()
    queue = queue_name()
    handled: list[str] = []

    async def batch_handler(session, items):
        handled.extend(envelope["id"] for envelope, _ in items)

    consumer = EventConsumer(db, broker, service, queue, ["roomee.traced.#"], None, batch_handler=batch_handler,
                             batch_size=50, batch_window_seconds=0.05)
    await consumer.start()
    try:
        envelopes = [sample_envelope(i) for i in range(3)]
        producers, messages = [], []
        for envelope in envelopes:  # each event published under its own producer span
            with trace.get_tracer("tests").start_as_current_span("produce") as span:
                headers: dict[str, str] = {}
                propagate.inject(headers)
                producers.append(span.get_span_context())
                messages.append(Message("roomee.traced.x", json.dumps(envelope).encode(), headers, envelope["id"]))
        await broker.publish_batch(messages)
        await wait_until(lambda: len(handled) == 3, timeout=10)
        await asyncio.sleep(0.1)  # the span ends once the batch is settled
        spans = [s for s in exporter.get_finished_spans() if s.name == f"process {queue}"]
        assert len(spans) == 1  # one span for the batch, not one per message
        [span] = spans
        assert span.kind == trace.SpanKind.CONSUMER
        assert span.attributes["messaging.batch.message_count"] == 3
        assert sorted((link.context.trace_id, link.context.span_id) for link in span.links) == sorted(
            (context.trace_id, context.span_id) for context in producers
        )
    finally:
        await consumer.stop()
        exporter.shutdown()  # the processor stays on the process's provider; it keeps nothing more
