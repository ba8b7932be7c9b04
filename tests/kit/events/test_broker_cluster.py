"""RabbitMQ as a cluster: several broker addresses, quorum queues, and a node killed while events flow.

These always speak RabbitMQ, whatever ROOMEE_TEST_BACKEND says (the database is the backend's): the
single-node cases on the machine's RabbitMQ (5672), the cluster case on a three-node cluster of its own
(tests/fixtures/rabbitmq_cluster.py, free ports), started and always stopped by the test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest

from roomee.kit.events import EventConsumer, OutboxRelay, broker_from_settings, emit_many
from roomee.kit.events.amqp import AmqpBroker, QueueTypeMismatch, broker_urls
from tests.fixtures.platform import AMQP_URL, BACKEND, free_port
from tests.fixtures.rabbitmq_cluster import ClusterError, RabbitCluster
from tests.kit.events.conftest import Recorder, wait_until
from tests.kit.events.helpers import sample_envelope, unique_service

ROUTING_KEY = "roomee.notification.page.created"


def isolated(make_events_settings, broker_url: str, **overrides):
    """Settings on ``broker_url`` with an exchange and queue names of their own."""
    tag = uuid.uuid4().hex[:8]
    return make_events_settings(
        broker_url=broker_url, exchange=f"roomee-cluster-test-{tag}", queue_prefix=f"c{tag}-", **overrides
    )


def test_the_broker_setting_takes_several_comma_separated_urls():
    assert broker_urls("amqp://a:1/, amqp://b:2/,amqp://c:3/") == ["amqp://a:1/", "amqp://b:2/", "amqp://c:3/"]
    assert broker_urls(AMQP_URL) == [AMQP_URL]
    with pytest.raises(ValueError):
        broker_urls(" , ")
    with pytest.raises(ValueError):
        AmqpBroker(AMQP_URL, queue_type="stream")


@pytest.mark.timeout(60)
async def test_the_first_node_that_answers_is_used(make_events_settings, make_db, make_broker):
    refused = f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # nothing listens there
    settings = isolated(make_events_settings, f"{refused},{AMQP_URL}")
    broker = await make_broker(settings)
    db = await make_db(unique_service("notif"), settings)
    recorder = Recorder()
    consumer = EventConsumer(db, broker, "notif", f"{settings.queue_prefix}first", ["roomee.notification.#"], recorder)
    await consumer.start()
    relay = OutboxRelay(db, broker, unique_service("news"))
    await relay.start()
    try:
        envelope = sample_envelope(1)
        async with db.transaction() as session:
            await emit_many(session, [(ROUTING_KEY, envelope)])
        await wait_until(lambda: recorder.handled_ids == [envelope["id"]])
    finally:
        await relay.stop()
        await consumer.stop()


@pytest.mark.timeout(60)
async def test_quorum_queues_retry_through_their_ttl_queues(make_events_settings, make_db, make_broker):
    """A quorum queue's retry queues (message TTL, then dead-lettered back to the queue) work: a handler
    that fails twice handles the event on its third delivery, once."""
    settings = isolated(make_events_settings, AMQP_URL, queue_type="quorum", retry_delays_ms=[200, 400, 800])
    broker = await make_broker(settings)
    db = await make_db(unique_service("notif"), settings)
    failures = {"left": 2}

    class FailingTwice(Recorder):
        async def __call__(self, session, envelope, delivery):
            if failures["left"]:
                failures["left"] -= 1
                raise RuntimeError("not yet")
            await super().__call__(session, envelope, delivery)

    recorder = FailingTwice()
    queue = f"{settings.queue_prefix}retry"
    consumer = EventConsumer(db, broker, "notif", queue, ["roomee.notification.#"], recorder)
    await consumer.start()
    relay = OutboxRelay(db, broker, unique_service("news"))
    await relay.start()
    try:
        envelope = sample_envelope(2)
        async with db.transaction() as session:
            await emit_many(session, [(ROUTING_KEY, envelope)])
        await wait_until(lambda: recorder.handled_ids == [envelope["id"]])
        assert recorder.calls[0][1].attempt == 3
        assert (await broker.dead_letter_counts([queue])) == {queue: 0}
    finally:
        await relay.stop()
        await consumer.stop()


@pytest.mark.timeout(60)
async def test_an_existing_queue_of_the_other_type_is_refused_naming_the_setting(make_events_settings, make_broker):
    settings = isolated(make_events_settings, AMQP_URL)
    queue = f"{settings.queue_prefix}typed"
    classic = await make_broker(settings)
    await classic.declare_queue(queue, ["roomee.notification.#"])
    quorum = await make_broker(settings.model_copy(update={"queue_type": "quorum"}))
    with pytest.raises(QueueTypeMismatch, match="ROOMEE_QUEUE_TYPE"):
        await quorum.declare_queue(queue, ["roomee.notification.#"])


@pytest.mark.timeout(120)
async def test_migrate_refuses_to_change_the_queue_type_in_one_line(tmp_path, make_events_settings):
    """``roomee migrate`` on queues declared classic, now with ROOMEE_QUEUE_TYPE=quorum: exit 1 and one line
    naming the setting (RabbitMQ never changes a queue's type), not a traceback."""
    from roomee.kit.platform import Platform

    settings = isolated(make_events_settings, AMQP_URL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMEE_")} | {
        "ROOMEE_DATA_DIR": str(tmp_path / "cli"), "ROOMEE_BROKER_URL": AMQP_URL,
        "ROOMEE_EXCHANGE": settings.exchange, "ROOMEE_QUEUE_PREFIX": settings.queue_prefix,
    }
    command = [sys.executable, "-m", "roomee.cli", "migrate", "--target", "notification"]
    try:
        first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=90)
        assert first.returncode == 0, first.stderr
        changed = subprocess.run(command, capture_output=True, text=True, env=env | {"ROOMEE_QUEUE_TYPE": "quorum"},
                                 timeout=90)
        assert changed.returncode == 1, changed.stderr
        errors = [line for line in changed.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: queue ") and "ROOMEE_QUEUE_TYPE" in errors[0], errors
    finally:
        cleaner = AmqpBroker(AMQP_URL, settings.exchange)
        await cleaner.start()
        try:
            for queue in Platform(settings, []).event_topology():
                await cleaner.delete_queue(queue)
            await cleaner.delete_exchange()
        finally:
            await cleaner.close()


# -- a three-node cluster ------------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path):
    """Three RabbitMQ nodes joined as one cluster; stopped whatever the test does. Under CI=1 a cluster
    that cannot start fails the test; elsewhere (no rabbitmq-server installed, say) it is skipped."""
    nodes = RabbitCluster(tmp_path / "rabbit", unique=True)  # other runs may have a cluster up too
    try:
        nodes.start()
    except (ClusterError, OSError) as exc:
        if os.environ.get("CI") == "1":
            pytest.fail(f"the three-node RabbitMQ cluster did not start: {exc}")
        pytest.skip(f"the three-node RabbitMQ cluster did not start: {exc}")
    try:
        yield nodes
    finally:
        nodes.stop()


# On PostgreSQL, as a clustered broker is deployed: on SQLite, 300 events at once through the outbox and
# the inbox of a two-core machine under load wait on the database file, not on the broker under test.
@pytest.mark.skipif(BACKEND != "real", reason="a broker cluster is deployed with PostgreSQL (ROOMEE_TEST_BACKEND=real)")
@pytest.mark.timeout(180)
async def test_a_node_killed_while_300_events_flow_loses_and_duplicates_none(
    cluster, make_events_settings, make_db, capsys
):
    settings = isolated(make_events_settings, cluster.urls, queue_type="quorum", outbox_poll_interval_seconds=0.1)
    publisher, subscriber = broker_from_settings(settings), broker_from_settings(settings)
    await publisher.start()
    await subscriber.start()
    db = await make_db(unique_service("members"), settings)
    inbox_db = await make_db(unique_service("notif"), settings)
    recorder = Recorder()
    consumer = EventConsumer(
        inbox_db, subscriber, "notif", f"{settings.queue_prefix}notification_queue", ["roomee.notification.#"], recorder
    )
    await consumer.start()
    relay = OutboxRelay(db, publisher, unique_service("members"))
    await relay.start()
    sent: list[str] = []
    try:
        # Both connections are on node 1 (the first URL), where the queues were declared: killing it
        # drops them and the queue leaders with it.
        for batch in range(30):
            envelopes = [sample_envelope(batch * 10 + i) for i in range(10)]
            async with db.transaction() as session:
                await emit_many(session, [(ROUTING_KEY, e) for e in envelopes])
            sent += [e["id"] for e in envelopes]
            if batch == 10:
                await wait_until(lambda: len(recorder.handled) >= 50, timeout=30)
                cluster.kill(1)
                killed_at = time.monotonic()
            await asyncio.sleep(0.05)
        await wait_until(lambda: len(set(recorder.handled_ids)) >= len(sent), timeout=90, interval=0.1)
        drained_after = time.monotonic() - killed_at
        deadline = time.monotonic() + 30
        while await relay.backlog():  # the outbox drained: every row published and marked
            assert time.monotonic() < deadline, "the outbox did not drain"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # room for any late duplicate to show
        counts = Counter(recorder.handled_ids)
        lost = [i for i in sent if i not in counts]
        duplicated = {i: n for i, n in counts.items() if n > 1}
        with capsys.disabled():
            print(f"\nbroker node loss: {len(sent)} events, lost {len(lost)}, duplicated {len(duplicated)}, "
                  f"all handled {drained_after:.1f} s after the kill")
        assert lost == [] and duplicated == {}
        assert set(counts) == set(sent)
    finally:
        await relay.stop()
        await consumer.stop()
        await publisher.close()
        await subscriber.close()

