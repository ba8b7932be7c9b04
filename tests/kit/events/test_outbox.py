"""The transactional outbox and its relay, on the backend the run selects."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from roomee.kit.db import Database
from roomee.kit.events import (
    BrokerUnavailable,
    EventConsumer,
    Message,
    OutboxRelay,
    broker_from_settings,
    emit,
    emit_many,
)
from roomee.kit.events.tables import outbox_table
from tests.fixtures.platform import BACKEND
from tests.kit.events.conftest import Recorder, wait_until
from tests.kit.events.helpers import FlakyBroker, amqp_count, gauge, sample_envelope, unique_service

ROUTING_KEY = "roomee.notification.page.created"


async def outbox_rows(db: Database) -> list:
    async with db.sessionmaker() as session:
        result = await session.execute(sa.select(outbox_table).order_by(outbox_table.c.created_at))
        return result.all()


async def test_relay_publishes_committed_events_not_rolled_back_ones(
    make_events_settings, make_db, make_broker, queue_name
):
    # A long poll interval: prompt delivery below can only come from the after-commit wake-up.
    settings = make_events_settings(outbox_poll_interval_seconds=30)
    service = unique_service("news")
    db = await make_db(service, settings)
    consumer_db = await make_db(unique_service("notif"), settings)
    broker = await make_broker(settings)
    recorder = Recorder()
    consumer = EventConsumer(consumer_db, broker, "notif", queue_name(), ["roomee.notification.#"], recorder)
    await consumer.start()
    relay = OutboxRelay(db, broker, service)
    await relay.start()
    try:
        await asyncio.sleep(0.1)  # the relay's start-up cycle finds nothing
        committed = sample_envelope(1)
        rolled_back = sample_envelope(2)
        started = time.monotonic()
        async with db.transaction() as session:
            await emit(session, ROUTING_KEY, committed)
        with pytest.raises(RuntimeError):
            async with db.transaction() as session:
                await emit(session, ROUTING_KEY, rolled_back)
                raise RuntimeError("the business change failed")
        await wait_until(lambda: len(recorder.handled) >= 1, timeout=5)
        assert time.monotonic() - started < 2.0, "the commit did not wake the relay"
        await asyncio.sleep(0.3)
        assert recorder.handled == [committed]  # exactly the envelope, field for field
        envelope, delivery, _ = recorder.calls[0]
        assert delivery.routing_key == ROUTING_KEY
        assert delivery.message_id == committed["id"]
        assert delivery.attempt == 1
        rows = await outbox_rows(db)
        assert len(rows) == 1 and rows[0].published_at is not None
        assert json.loads(rows[0].body) == committed
        assert await relay.backlog() == 0
        assert gauge("outbox_backlog", service=service) == 0
        assert amqp_count(service, ROUTING_KEY, "publish", "ok") == 1
        assert amqp_count("notif", "roomee.notification.#", "consume", "ok") >= 1
    finally:
        await relay.stop()
        await consumer.stop()


async def test_emit_many_keeps_order_and_carries_trace_context(make_db, make_broker, queue_name):
    service = unique_service("news")
    db = await make_db(service)
    consumer_db = await make_db(unique_service("notif"))
    broker = await make_broker()
    seen: list[tuple[str, int]] = []

    async def handler(session, envelope, delivery):
        seen.append((envelope["id"], trace.get_current_span().get_span_context().trace_id))

    consumer = EventConsumer(consumer_db, broker, "notif", queue_name(), ["roomee.#"], handler, prefetch=1)
    await consumer.start()
    relay = OutboxRelay(db, broker, service)
    await relay.start()
    try:
        envelopes = [sample_envelope(n) for n in range(60)]
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("POST /api/v1/pages") as span:
            producer_trace_id = span.get_span_context().trace_id
            async with db.transaction() as session:
                await emit_many(session, [(ROUTING_KEY, e) for e in envelopes])
        rows = await outbox_rows(db)
        assert [json.loads(r.body)["id"] for r in rows] == [e["id"] for e in envelopes]
        assert json.loads(rows[0].headers)["traceparent"].split("-")[1] == f"{producer_trace_id:032x}"
        await wait_until(lambda: len(seen) >= 60, timeout=10)
        assert [event_id for event_id, _ in seen] == [e["id"] for e in envelopes]  # prefetch 1: in order
        assert {trace_id for _, trace_id in seen} == {producer_trace_id}
    finally:
        await relay.stop()
        await consumer.stop()


async def test_broker_failures_delay_events_but_lose_none(make_db, make_broker, queue_name):
    service = unique_service("news")
    db = await make_db(service)
    consumer_db = await make_db(unique_service("notif"))
    broker = await make_broker()
    recorder = Recorder()
    consumer = EventConsumer(consumer_db, broker, "notif", queue_name(), ["roomee.notification.#"], recorder)
    await consumer.start()
    flaky = FlakyBroker(broker, failures=2)
    relay = OutboxRelay(db, flaky, service)
    await relay.start()
    try:
        envelopes = [sample_envelope(n) for n in range(20)]
        for start in range(0, 20, 5):
            async with db.transaction() as session:
                await emit_many(session, [(ROUTING_KEY, e) for e in envelopes[start : start + 5]])
        # While the broker fails the rows stay, and the backlog says so.
        await wait_until(lambda: flaky.attempts >= 1, timeout=5)
        await wait_until(lambda: (gauge("outbox_backlog", service=service) or 0) > 0, timeout=5)
        await wait_until(lambda: len(recorder.handled) >= 20, timeout=15)
        await asyncio.sleep(0.3)
        assert sorted(recorder.handled_ids) == sorted(e["id"] for e in envelopes)
        assert flaky.attempts >= 3
        assert amqp_count(service, ROUTING_KEY, "publish", "error") >= 2
        assert amqp_count(service, ROUTING_KEY, "publish", "ok") == 20
        assert await relay.backlog() == 0
    finally:
        await relay.stop()
        await consumer.stop()


@pytest.mark.skipif(BACKEND != "real", reason="stops the real RabbitMQ application")
async def test_rabbitmq_outage_then_every_event_arrives_once(make_db, make_broker, queue_name):
    service = unique_service("news")
    db = await make_db(service)
    consumer_db = await make_db(unique_service("notif"))
    broker = await make_broker()
    recorder = Recorder()
    consumer = EventConsumer(consumer_db, broker, "notif", queue_name(), ["roomee.notification.#"], recorder)
    await consumer.start()
    relay = OutboxRelay(db, broker, service)
    await relay.start()
    envelopes = [sample_envelope(n) for n in range(40)]
    try:
        for e in envelopes[:10]:
            async with db.transaction() as session:
                await emit(session, ROUTING_KEY, e)
        await wait_until(lambda: len(recorder.handled) >= 10, timeout=10)
        try:
            await rabbitmqctl("stop_app")
            for e in envelopes[10:30]:
                async with db.transaction() as session:
                    await emit(session, ROUTING_KEY, e)
            await asyncio.sleep(1.0)
            with pytest.raises(Exception):
                await broker.ping()
            assert await relay.backlog() > 0
            # A publish during the outage fails at once (the relay backs off with its rows), rather
            # than holding the relay's transaction until the broker is back.
            broker.publish_timeout = 3600
            with pytest.raises(BrokerUnavailable):
                await asyncio.wait_for(broker.publish_batch([Message(ROUTING_KEY, b"{}")]), 10)
        finally:
            await rabbitmqctl("start_app")
            await rabbitmqctl("await_startup", "--timeout", "60")
        for e in envelopes[30:]:
            async with db.transaction() as session:
                await emit(session, ROUTING_KEY, e)
        await wait_until(lambda: len(recorder.handled) >= 40, timeout=30)
        await asyncio.sleep(0.5)
        counts = Counter(recorder.handled_ids)
        assert set(counts) == {e["id"] for e in envelopes}
        assert set(counts.values()) == {1}
        await broker.ping()
        assert await relay.backlog() == 0
    finally:
        await relay.stop()
        await consumer.stop()


async def rabbitmqctl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"rabbitmqctl {' '.join(args)} failed: {out.decode()}"


async def test_committed_events_survive_a_restart(make_events_settings, make_db, make_broker, queue_name):
    """Event A reached the broker but not the consumer; event B was committed but never relayed.
    After everything stops, a new process (new engine, new broker, same data) delivers both."""
    settings = make_events_settings()
    service = unique_service("news")
    consumer_service = unique_service("notif")
    queue = queue_name()
    db = await make_db(service, settings)
    broker = await make_broker(settings)
    await broker.declare_queue(queue, ["roomee.notification.#"])
    relay = OutboxRelay(db, broker, service)
    await relay.start()
    a, b = sample_envelope(1), sample_envelope(2)
    async with db.transaction() as session:
        await emit(session, ROUTING_KEY, a)
    await wait_until(lambda: amqp_count(service, ROUTING_KEY, "publish", "ok") >= 1, timeout=5)
    await relay.stop()
    async with db.transaction() as session:
        await emit(session, ROUTING_KEY, b)
    await broker.close()
    await db.dispose()

    # "Restart": fresh objects on the same data directory / schemas / RabbitMQ.
    broker2 = broker_from_settings(settings)
    await broker2.start()
    db2 = Database(service, settings)
    consumer_db = await make_db(consumer_service, settings)
    recorder = Recorder()
    relay2 = OutboxRelay(db2, broker2, service)
    consumer = EventConsumer(consumer_db, broker2, consumer_service, queue, ["roomee.notification.#"], recorder)
    await consumer.start()
    await relay2.start()
    try:
        await broker2.ping()
        await wait_until(lambda: len(recorder.handled) >= 2, timeout=10)
        assert sorted(recorder.handled_ids) == sorted([a["id"], b["id"]])
    finally:
        await consumer.stop()
        await relay2.stop()
        await broker2.close()
        await db2.dispose()
        cleanup = await make_broker(settings)
        cleanup.declared_queues.add(queue)  # the fixture deletes it afterwards


async def test_replicas_share_the_outbox(make_db, make_broker, queue_name):
    """Two relays on one database: every event handled once; on PostgreSQL (SKIP LOCKED) none is
    even published twice."""
    service = unique_service("news")
    db = await make_db(service)
    consumer_db = await make_db(unique_service("notif"))
    broker = await make_broker()
    recorder = Recorder()
    consumer = EventConsumer(consumer_db, broker, "notif", queue_name(), ["roomee.#"], recorder)
    await consumer.start()
    envelopes = [sample_envelope(n) for n in range(200)]
    async with db.transaction() as session:
        await emit_many(session, [(ROUTING_KEY, e) for e in envelopes])
    relays = [OutboxRelay(db, broker, service, batch_size=20) for _ in range(2)]
    for relay in relays:
        await relay.start()
    try:
        await wait_until(lambda: len(recorder.handled) >= 200, timeout=15)
        await asyncio.sleep(0.3)
        assert Counter(recorder.handled_ids) == Counter(e["id"] for e in envelopes)
        if db.is_postgres:
            assert amqp_count(service, ROUTING_KEY, "publish", "ok") == 200
    finally:
        for relay in relays:
            await relay.stop()
        await consumer.stop()


async def test_published_rows_are_deleted_after_retention(make_db, make_broker, queue_name):
    service = unique_service("news")
    db = await make_db(service)
    broker = await make_broker()
    await broker.declare_queue(queue_name(), ["roomee.notification.#"])
    relay = OutboxRelay(db, broker, service, retention_seconds=0.2)
    async with db.transaction() as session:
        await emit_many(session, [(ROUTING_KEY, sample_envelope(n)) for n in range(3)])
    assert await relay.publish_pending() == 3
    assert await relay.delete_published() == 0  # kept for a while
    await asyncio.sleep(0.3)
    async with db.transaction() as session:
        await emit(session, ROUTING_KEY, sample_envelope(9))  # unpublished: never deleted
    assert await relay.delete_published() == 3
    assert len(await outbox_rows(db)) == 1
