"""Unroutable events (issue 7 item 14): an event no queue is bound to is returned by the broker
(AMQP ``mandatory``; the embedded bus the same) and stays in the outbox, put aside without holding
back the rows after it, counted, and published once a queue bound to it appears. A broadcast
(``require_consumer=False``, e.g. ``roomee.auth.user.created``) goes out without a consumer.
Also the dead-letter gauge. On the backend the run selects."""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa

from roomee.kit.events import EventConsumer, Message, OutboxRelay, PermanentFailure, emit
from roomee.kit.events.outbox import UNROUTABLE_HEADER
from roomee.kit.events.tables import outbox_table
from roomee.kit.platform import Platform
from tests.kit.events.conftest import Recorder, wait_until
from tests.kit.events.helpers import amqp_count, gauge, sample_envelope, unique_service

BOUND_KEY = "roomee.notification.page.created"
UNBOUND_KEY = "roomee.later.thing.happened"


async def _pending(db) -> dict[str, dict]:
    """Unpublished outbox rows by event id: routing key and stored headers."""
    async with db.sessionmaker() as session:
        rows = (
            await session.execute(
                sa.select(outbox_table.c.body, outbox_table.c.routing_key, outbox_table.c.headers).where(
                    outbox_table.c.published_at.is_(None)
                )
            )
        ).all()
    return {json.loads(body)["id"]: {"routing_key": key, "headers": json.loads(headers)} for body, key, headers in rows}


async def test_the_broker_answers_mandatory_messages_no_queue_is_bound_to(make_broker, queue_name):
    broker = await make_broker()
    await broker.declare_queue(queue_name(), ["roomee.notification.#"])
    bound = Message(BOUND_KEY, b'{"id": "m1"}', {}, "m1")
    unbound = Message(UNBOUND_KEY, b'{"id": "m2"}', {}, "m2")
    broadcast = Message(UNBOUND_KEY, b'{"id": "m3"}', {}, "m3", mandatory=False)
    returned = await broker.publish_batch([bound, unbound, broadcast])
    assert returned == [unbound]


async def test_an_unbound_event_waits_in_the_outbox_without_blocking_and_goes_once_a_queue_appears(
    make_events_settings, make_db, make_broker, queue_name
):
    settings = make_events_settings(outbox_poll_interval_seconds=0.1)
    service = unique_service("news")
    db = await make_db(service, settings)
    consumer_db = await make_db(unique_service("notif"), settings)
    broker = await make_broker(settings)
    bound = Recorder()
    consumers = [EventConsumer(consumer_db, broker, "notif", queue_name("bound"), ["roomee.notification.#"], bound)]
    await consumers[0].start()
    relay = OutboxRelay(db, broker, service)
    try:
        lost, first, second = sample_envelope(1), sample_envelope(2), sample_envelope(3)
        async with db.transaction() as session:
            await emit(session, UNBOUND_KEY, lost)  # first in the outbox's order
            await emit(session, BOUND_KEY, first)
        assert await relay.publish_pending() == 2
        await wait_until(lambda: bound.handled_ids == [first["id"]])
        pending = await _pending(db)
        assert list(pending) == [lost["id"]], "the unroutable event left the outbox (lost)"
        assert pending[lost["id"]]["headers"][UNROUTABLE_HEADER] == 1
        assert gauge("outbox_unroutable_events", service=service, family="roomee.later.thing") == 1
        assert amqp_count(service, UNBOUND_KEY, "publish", "unroutable") == 1

        # Put aside with its own backoff: the next cycle takes the later row only.
        async with db.transaction() as session:
            await emit(session, BOUND_KEY, second)
        assert await relay.publish_pending() == 1
        await wait_until(lambda: bound.handled_ids == [first["id"], second["id"]])
        assert list(await _pending(db)) == [lost["id"]]

        # A consumer of that key is deployed: the relay's retry publishes the kept event to it.
        late = Recorder()
        consumers.append(EventConsumer(consumer_db, broker, "notif", queue_name("late"), ["roomee.later.#"], late))
        await consumers[-1].start()
        await relay.start()
        await wait_until(lambda: late.handled_ids == [lost["id"]], timeout=20)
        for _ in range(200):  # the relay marks the row once the broker confirmed (the consumer may be faster)
            if not await _pending(db):
                break
            await asyncio.sleep(0.02)
        assert await _pending(db) == {}
        await wait_until(lambda: gauge("outbox_unroutable_events", service=service, family="roomee.later.thing") == 0)
        _envelope, delivery, _ = late.calls[0]
        assert UNROUTABLE_HEADER not in delivery.headers  # the outbox's bookkeeping stays on the row
        assert bound.handled_ids == [first["id"], second["id"]]  # not sent twice to the bound queue
    finally:
        await relay.stop()
        for consumer in consumers:
            await consumer.stop()


async def test_a_broadcast_is_published_without_a_consumer(make_db, make_broker):
    service = unique_service("auth")
    db = await make_db(service)
    broker = await make_broker()
    relay = OutboxRelay(db, broker, service)
    async with db.transaction() as session:
        await emit(session, UNBOUND_KEY, sample_envelope(1), require_consumer=False)
    assert await relay.publish_pending() == 1
    assert await _pending(db) == {}
    assert amqp_count(service, UNBOUND_KEY, "publish", "ok") == 1
    assert gauge("outbox_unroutable_events", service=service, family="roomee.later.thing") is None


async def test_user_created_is_published_although_nothing_consumes_it(make_db, make_broker):
    from roomee.auth import events as auth_events

    service = unique_service("auth")
    db = await make_db(service)
    broker = await make_broker()
    relay = OutboxRelay(db, broker, service)
    member = {"workspaceId": "ws1", "ecosystemId": "hotel1", "workspaceName": "Lobby"}
    user = {"id": "u1", "email": "ann@example.com", "first_name": "Ann", "last_name": "Lee"}
    async with db.transaction() as session:
        await auth_events.user_created(session, user=user, member=member)
    assert await relay.publish_pending() == 1
    assert await _pending(db) == {}
    assert amqp_count(service, "roomee.auth.user.created", "publish", "ok") == 1


async def test_dead_letters_waiting_are_counted_per_queue(make_events_settings, make_db, make_broker, queue_name):
    settings = make_events_settings()
    service = unique_service("notif")
    db = await make_db(service, settings)
    broker = await make_broker(settings)

    async def handler(session, envelope, delivery):
        raise PermanentFailure("this can never work")

    queue, other = queue_name("dead"), queue_name("quiet")
    consumers = [
        EventConsumer(db, broker, service, queue, ["roomee.notification.#"], handler),
        EventConsumer(db, broker, service, other, ["roomee.storage.media"], handler),
    ]
    for consumer in consumers:
        await consumer.start()
    try:
        await broker.publish_batch(
            [Message(BOUND_KEY, json.dumps(e).encode(), {}, e["id"]) for e in (sample_envelope(1), sample_envelope(2))]
        )
        for _ in range(100):
            if len(await broker.dead_letters(queue)) == 2:
                break
            await asyncio.sleep(0.05)
        platform = Platform(settings, [])
        platform.broker = broker
        platform._consumers = consumers
        assert await platform.sample_dead_letters() == {queue: 2, other: 0}
        assert gauge("dead_letters_waiting", service=service, queue=queue) == 2
        assert gauge("dead_letters_waiting", service=service, queue=other) == 0
        # A queue that does not exist is left out (and not created).
        assert await broker.dead_letter_counts([queue_name("typo")]) == {}
    finally:
        for consumer in consumers:
            await consumer.stop()
