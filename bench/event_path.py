"""Micro-benchmark of the kit's event path on RabbitMQ + PostgreSQL (issue 12 §2). A script, not a test.

    python bench/event_path.py [--messages 20000] [--rounds 3]

Each figure is a ratio to a ceiling measured in the same run, on the same broker, queue and
messages (a notification envelope, one receiver):

- publish: ``AmqpBroker.publish_batch`` (what the outbox relay calls, 500 messages a batch) against
  aio-pika's own ``Exchange.publish`` gathered over the same windows with publisher confirms and
  ``mandatory`` (what the kit did before);
- consume: ``EventConsumer`` with an empty batch handler (inbox rows on PostgreSQL, one
  transaction per batch, manual acks: the ceiling column of ``bench/notification_fanout.py``)
  against a bare aiormq consumer that only acks (the wire's ceiling), both draining a queue
  filled beforehand with the same messages and prefetch.

The best of ``--rounds`` is kept for each side (the machine is shared: the noise only slows), in
wall time and in this process's CPU per message (steadier on a loaded machine: PostgreSQL and
RabbitMQ run elsewhere, so it is the kit's own cost).
Runs on uvloop, as ``roomee run`` does. Everything it creates (schema, exchange, queues) is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "services"))

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0)
    return parser.parse_args()


def envelopes(n: int) -> list:
    from roomee.kit.events import Message, build_envelope

    out = []
    for _ in range(n):
        envelope = build_envelope(
            "page.created", workspace_id=str(uuid.uuid4()), workspace_name="Bench Hotel",
            payload={"id": f"page-{uuid.uuid4().hex[:8]}", "title": "Nouvelle politique RH"},
            actor={"id": "bench-author", "name": "Ada Admin", "type": "member"}, receiver_ids=[str(uuid.uuid4())],
        )
        out.append(Message("roomee.bench.page.created", json.dumps(envelope).encode(), {}, envelope["id"]))
    return out


async def publish_aio_pika(broker, messages, window: int = 500) -> None:
    """The kit's publish before: aio-pika Messages, ``Exchange.publish`` gathered per window."""
    import aio_pika

    exchange = broker._exchange
    for start in range(0, len(messages), window):
        results = await asyncio.gather(*(
            exchange.publish(
                aio_pika.Message(m.body, headers=m.headers, message_id=m.message_id, content_type="application/json",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                m.routing_key, mandatory=True,
            )
            for m in messages[start : start + window]
        ))
        assert not any(isinstance(r, aio_pika.abc.AbstractIncomingMessage) for r in results)


async def publish_kit(broker, messages, batch: int = 500) -> None:
    for start in range(0, len(messages), batch):
        assert not await broker.publish_batch(messages[start : start + batch])  # nothing unroutable


async def drain_raw(broker, queue: str, n: int, prefetch: int, timeout: float) -> float:
    """A bare aiormq consumer acking each message: seconds to drain n."""
    connection = broker._connection
    channel = await connection.channel()
    underlay = await channel.get_underlay_channel()
    await underlay.basic_qos(prefetch_count=prefetch)
    done = asyncio.Event()
    count = 0

    async def on_message(message) -> None:
        nonlocal count
        if count >= n:
            return  # left unacked: back in the queue when the channel closes, for the kit's turn
        count += 1
        await underlay.basic_ack(message.delivery.delivery_tag)
        if count >= n:
            done.set()

    start = time.perf_counter()
    ok = await underlay.basic_consume(queue, on_message)
    await asyncio.wait_for(done.wait(), timeout)
    elapsed = time.perf_counter() - start
    await underlay.basic_cancel(ok.consumer_tag)
    await channel.close()
    return elapsed


async def drain_kit(db, broker, queue: str, bindings, n: int, prefetch: int, timeout: float) -> float:
    from roomee.kit.events import EventConsumer

    done = asyncio.Event()
    count = batches = 0

    async def empty(_session, batch) -> None:
        nonlocal count, batches
        count += len(batch)
        batches += 1
        if count >= n:
            done.set()

    consumer = EventConsumer(db, broker, "bench", queue, bindings, None, batch_handler=empty, prefetch=prefetch)
    start = time.perf_counter()
    await consumer.start()
    try:
        await asyncio.wait_for(done.wait(), timeout)
        elapsed = time.perf_counter() - start
        print(f"  (kit consumer: {batches} batches, {count / max(batches, 1):.0f} messages each)", flush=True)
        return elapsed
    finally:
        await consumer.stop()


async def main() -> None:
    import sqlalchemy as sa

    from roomee.kit import migrations
    from roomee.kit.db import Database
    from roomee.kit.events import add_event_tables
    from roomee.kit.events.amqp import AmqpBroker
    from roomee.kit.settings import Settings

    args = parse_args()
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        data_dir=Path("/tmp") / f"roomee-bench-events-{run}", database_url=PG_URL, broker_url=AMQP_URL,
        schema_prefix=f"bench{run}_", exchange=f"roomee-bench-{run}", queue_prefix=f"bench-{run}-",
        log_level="WARNING", allow_unsafe_defaults=True,
    )
    prefetch = settings.consumer_prefetch
    db = Database("events", settings)
    await migrations.ensure_schema(db)
    metadata = sa.MetaData()
    add_event_tables(metadata)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    broker = AmqpBroker(AMQP_URL, settings.exchange)
    await broker.start()
    queue = f"{settings.queue_prefix}bench"
    bindings = ["roomee.bench.#"]
    await broker.declare_queue(queue, bindings)
    n = args.messages
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}

    async def timed(name: str, work) -> None:
        cpu_start = time.process_time()
        seconds = await work
        cpu_used = time.process_time() - cpu_start
        best[name] = min(best.get(name, float("inf")), seconds)
        cpu[name] = min(cpu.get(name, float("inf")), cpu_used)
        print(f"  {name}: {seconds:.3f} s ({n / seconds:,.0f}/s), CPU {cpu_used / n * 1e6:.0f} us/msg", flush=True)

    async def wall(publish, messages) -> float:
        start = time.perf_counter()
        await publish(broker, messages)
        return time.perf_counter() - start

    try:
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}", flush=True)
            for name, publish in (("publish aio-pika", publish_aio_pika), ("publish kit", publish_kit)):
                await timed(name, wall(publish, envelopes(n)))
            # The queue now holds 2n messages: the raw consumer drains n, the kit consumer the other n.
            await timed("consume raw aiormq", drain_raw(broker, queue, n, prefetch, args.timeout))
            await timed("consume kit", drain_kit(db, broker, queue, bindings, n, prefetch, args.timeout))
    finally:
        await broker.delete_queue(queue)
        await broker.delete_exchange()
        await broker.close()
        async with db.engine.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE'))
        await db.dispose()

    print(f"\n{n:,} messages, best of {args.rounds} rounds")
    for name, seconds in best.items():
        print(f"  {name:<22} {n / seconds:>10,.0f} msg/s   CPU {cpu[name] / n * 1e6:>5.0f} us/msg")
    print(f"ratio publish kit / aio-pika:   {best['publish aio-pika'] / best['publish kit']:.2f}x wall, "
          f"{cpu['publish aio-pika'] / cpu['publish kit']:.2f}x CPU")
    print(f"ratio consume kit / raw aiormq: {best['consume raw aiormq'] / best['consume kit']:.2f}x wall, "
          f"{cpu['consume raw aiormq'] / cpu['consume kit']:.2f}x CPU")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
