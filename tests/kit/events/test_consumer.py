"""Consumers: retries at 1 s / 2 s / 4 s, dead letters and replay, idempotence by event id."""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa

from roomee.kit.events import EventConsumer, Message, PermanentFailure, emit
from roomee.kit.events.tables import inbox_table, outbox_table
from tests.kit.events.conftest import Recorder, wait_until
from tests.kit.events.helpers import amqp_count, sample_envelope, unique_service

ROUTING_KEY = "roomee.notification.comment.created"


def message_for(envelope: dict, routing_key: str = ROUTING_KEY) -> Message:
    return Message(routing_key, json.dumps(envelope).encode(), {}, envelope["id"])


async def count_rows(db, table) -> int:
    async with db.sessionmaker() as session:
        return (await session.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()


async def test_failing_handler_is_retried_at_1_2_4_seconds_then_dead_lettered_and_replayed(
    make_db, make_broker, queue_name
):
    service = unique_service("notif")
    db = await make_db(service)
    broker = await make_broker()
    queue = queue_name()
    recorder = Recorder()
    recorder.fail = True
    consumer = EventConsumer(db, broker, service, queue, ["roomee.notification.#"], recorder)
    await consumer.start()
    try:
        first, second = sample_envelope(1), sample_envelope(2)
        await broker.publish_batch([message_for(first), message_for(second)])
        await wait_until(lambda: len(recorder.calls) >= 8, timeout=12)

        for envelope in (first, second):
            times = [t for e, _, t in recorder.calls if e["id"] == envelope["id"]]
            attempts = [d.attempt for e, d, _ in recorder.calls if e["id"] == envelope["id"]]
            assert attempts == [1, 2, 3, 4]
            gaps = [later - earlier for earlier, later in zip(times, times[1:])]
            for gap, expected in zip(gaps, (1.0, 2.0, 4.0)):
                assert abs(gap - expected) <= 0.6, f"retry gaps {gaps}"
        assert all(d.routing_key == ROUTING_KEY for _, d, _ in recorder.calls)

        async def dead() -> list:
            return await broker.dead_letters(queue)

        letters: list = []
        for _ in range(100):
            letters = await dead()
            if len(letters) == 2:
                break
            await asyncio.sleep(0.05)
        assert sorted(letter.id for letter in letters) == sorted([first["id"], second["id"]])
        letter = next(letter for letter in letters if letter.id == first["id"])
        assert letter.routing_key == ROUTING_KEY
        assert letter.attempts == 4
        assert "handler told to fail" in letter.error
        assert json.loads(letter.body) == first
        assert letter.dead_at is not None
        assert len(await dead()) == 2  # listing leaves them in place

        assert amqp_count(service, "roomee.notification.#", "consume", "retry") == 6  # labelled by binding
        assert amqp_count(service, "roomee.notification.#", "consume", "dead") == 2
        assert await count_rows(db, inbox_table) == 0  # failed attempts roll back their inbox row

        # Fixed: replay one of them by id; the other stays dead.
        recorder.fail = False
        assert await broker.replay_dead_letters(queue, [first["id"]]) == 1
        await wait_until(lambda: len(recorder.handled) >= 1, timeout=5)
        assert recorder.handled == [first]
        assert recorder.calls[-1][1].attempt == 1  # retry count reset
        assert recorder.calls[-1][1].routing_key == ROUTING_KEY
        assert [letter.id for letter in await dead()] == [second["id"]]

        assert await broker.replay_dead_letters(queue) == 1
        await wait_until(lambda: len(recorder.handled) >= 2, timeout=5)
        assert await dead() == []
        assert amqp_count(service, "roomee.notification.#", "consume", "ok") == 2
    finally:
        await consumer.stop()


async def test_the_same_event_delivered_twice_is_handled_once(make_db, make_broker, queue_name):
    service = unique_service("notif")
    db = await make_db(service)
    broker = await make_broker()
    queue = queue_name()
    recorder = Recorder()
    consumer = EventConsumer(db, broker, service, queue, ["roomee.notification.#"], recorder, prefetch=1)
    await consumer.start()
    try:
        envelope = sample_envelope(1)
        await broker.publish_batch([message_for(envelope), message_for(envelope)])
        await broker.publish_batch([message_for(envelope)])  # e.g. the relay republishing after a crash
        await wait_until(lambda: amqp_count(service, "roomee.notification.#", "consume", "duplicate") >= 2, timeout=5)
        await asyncio.sleep(0.2)
        assert recorder.handled_ids == [envelope["id"]]
        assert amqp_count(service, "roomee.notification.#", "consume", "ok") == 1
        assert await count_rows(db, inbox_table) == 1
    finally:
        await consumer.stop()


async def test_handler_emits_in_the_consumer_transaction(make_db, make_broker, queue_name):
    """A handler that emits then fails leaves no outbox row; the successful retry leaves one."""
    service = unique_service("notif")
    db = await make_db(service)
    broker = await make_broker()
    attempts = []

    async def handler(session, envelope, delivery):
        attempts.append(delivery.attempt)
        await emit(session, "roomee.notification.derived", sample_envelope(99))
        if delivery.attempt == 1:
            raise RuntimeError("transient")

    consumer = EventConsumer(db, broker, service, queue_name(), ["roomee.notification.comment.*"], handler)
    await consumer.start()
    try:
        await broker.publish_batch([message_for(sample_envelope(1))])
        await wait_until(lambda: len(attempts) >= 2, timeout=5)
        await wait_until(lambda: amqp_count(service, "roomee.notification.comment.*", "consume", "ok") >= 1, timeout=5)
        assert attempts == [1, 2]
        assert await count_rows(db, outbox_table) == 1
    finally:
        await consumer.stop()


async def test_invalid_messages_are_dead_lettered_at_once(make_db, make_broker, queue_name):
    service = unique_service("notif")
    db = await make_db(service)
    broker = await make_broker()
    queue = queue_name()
    calls = []

    async def handler(session, envelope, delivery):
        calls.append(envelope)
        raise PermanentFailure("this can never work")

    consumer = EventConsumer(db, broker, service, queue, ["roomee.notification.#"], handler)
    await consumer.start()
    try:
        await broker.publish_batch(
            [
                Message(ROUTING_KEY, b"not json", {}, "bad-1"),
                Message(ROUTING_KEY, b'{"type": "no.id"}', {}, "bad-2"),
                message_for(sample_envelope(3)),
            ]
        )
        letters: list = []
        for _ in range(40):
            letters = await broker.dead_letters(queue)
            if len(letters) == 3:
                break
            await asyncio.sleep(0.05)
        assert len(letters) == 3, "dead-lettered without waiting for retries"
        assert {letter.attempts for letter in letters} == {1}
        assert len(calls) == 1
    finally:
        await consumer.stop()


async def test_a_replay_takes_each_dead_letter_once_even_if_it_fails_again_at_once(make_db, make_broker, queue_name):
    """A replayed event that still fails permanently is dead-lettered again while the replay goes on:
    the replay takes only what was waiting when it began, instead of taking it again (and again)."""
    service = unique_service("notif")
    db = await make_db(service)
    broker = await make_broker()
    queue = queue_name()
    calls = []

    async def handler(session, envelope, delivery):
        calls.append(envelope["id"])
        raise PermanentFailure("still broken")

    consumer = EventConsumer(db, broker, service, queue, ["roomee.notification.#"], handler)
    await consumer.start()
    try:
        envelopes = [sample_envelope(n) for n in range(20, 30)]
        await broker.publish_batch([message_for(envelope) for envelope in envelopes])
        await wait_until(lambda: len(calls) == 10, timeout=10)
        for _ in range(100):
            if len(await broker.dead_letters(queue)) == 10:
                break
            await asyncio.sleep(0.05)
        assert await broker.replay_dead_letters(queue) == 10
        await wait_until(lambda: len(calls) == 20, timeout=10)
        for _ in range(100):
            if len(await broker.dead_letters(queue)) == 10:
                break
            await asyncio.sleep(0.05)
        assert sorted(calls[10:]) == sorted(envelope["id"] for envelope in envelopes)
    finally:
        await consumer.stop()


async def test_routing_reaches_every_bound_queue_and_only_those(make_db, make_broker, queue_name):
    db = await make_db(unique_service("svc"))
    broker = await make_broker()
    recorders = {name: Recorder() for name in ("notification", "media", "pages")}
    bindings = {
        "notification": ["roomee.notification.#"],
        "media": ["roomee.storage.media"],
        "pages": ["roomee.notification.page.*", "roomee.notification.comment.*"],
    }
    consumers = [
        EventConsumer(db, broker, "svc", queue_name(name), bindings[name], recorders[name]) for name in recorders
    ]
    for consumer in consumers:
        await consumer.start()
    try:
        page, storage, hotel, comment = (sample_envelope(n) for n in range(4))
        await broker.publish_batch(
            [
                message_for(page, "roomee.notification.page.created"),
                message_for(storage, "roomee.storage.media"),
                message_for(hotel, "roomee.notification.hotel.created"),
                message_for(comment, "roomee.notification.comment.created"),
                message_for(sample_envelope(9), "roomee.auth.user.created"),  # no queue bound: dropped
            ]
        )
        await wait_until(
            lambda: len(recorders["notification"].handled) >= 3
            and len(recorders["media"].handled) >= 1
            and len(recorders["pages"].handled) >= 2,
            timeout=5,
        )
        await asyncio.sleep(0.2)
        assert sorted(recorders["notification"].handled_ids) == sorted([page["id"], hotel["id"], comment["id"]])
        assert recorders["media"].handled_ids == [storage["id"]]
        assert sorted(recorders["pages"].handled_ids) == sorted([page["id"], comment["id"]])
    finally:
        for consumer in consumers:
            await consumer.stop()


async def test_ping(make_broker, events_settings):
    from roomee.kit.events import BrokerUnavailable, broker_from_settings

    broker = await make_broker()
    await broker.ping()
    unstarted = broker_from_settings(events_settings)
    try:
        await unstarted.ping()
    except BrokerUnavailable:
        pass
    else:
        raise AssertionError("an unstarted broker must not answer ping")


async def test_a_retry_returns_only_to_the_failing_queue(make_broker, queue_name):
    broker = await make_broker()
    failing_calls, passing_calls = [], []

    async def failing(delivery):
        failing_calls.append(delivery.attempt)
        if delivery.attempt == 1:
            raise RuntimeError("once")

    async def passing(delivery):
        passing_calls.append(delivery.attempt)

    subscriptions = [
        await broker.consume(queue_name("failing"), ["roomee.notification.#"], failing),
        await broker.consume(queue_name("passing"), ["roomee.notification.#"], passing),
    ]
    try:
        await broker.publish_batch([message_for(sample_envelope(1))])
        await wait_until(lambda: failing_calls == [1, 2], timeout=5)
        await asyncio.sleep(0.3)
        assert passing_calls == [1]  # no raw duplicate in the other queue bound to the same key
    finally:
        for subscription in subscriptions:
            await subscription.cancel()
