"""The embedded durable bus: AMQP topic semantics on one SQLite file (``data_dir/bus.db``).

- ``bus_bindings`` (exchange, queue, binding key) is persisted: a queue declared once keeps
  receiving messages while its consumer is down or the process restarts.
- ``publish_batch`` inserts one ``bus_messages`` row per bound queue in one committed transaction;
  when it returns the messages survive a crash. A ``mandatory`` message matching no binding is
  answered as unroutable (as RabbitMQ returns it), so the outbox keeps its row.
- A consumer loop claims due rows (``available_at <= now``, up to ``prefetch`` in flight) under a
  lease, runs the handler, and settles: success deletes the row; failure bumps ``attempt`` and sets
  ``available_at = now + delay`` (1 s, 2 s, 4 s); after the last retry the row moves to
  ``bus_dead_letters``. Leases are renewed while the process lives, so a crashed process's
  messages are redelivered once its lease (60 s) runs out; a clean shutdown releases them at once.
- Publishing wakes this process's consumers at once (asyncio.Event); the loops also poll, so
  several processes can share the file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiosqlite

from roomee.kit.events.broker import (
    DEAD_AT_HEADER,
    ERROR_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    RETRY_COUNT_HEADER,
    Broker,
    BrokerUnavailable,
    DeadLetter,
    Delivery,
    Handler,
    Message,
    PermanentFailure,
    Subscription,
    without_broker_headers,
)
from roomee.kit.events.envelope import format_timestamp
from roomee.kit.events.topic import topic_matches
from roomee.kit.observability import RetryNotice

log = logging.getLogger("roomee.events")

SCHEMA = """
CREATE TABLE IF NOT EXISTS bus_bindings (
    exchange TEXT NOT NULL,
    queue TEXT NOT NULL,
    binding_key TEXT NOT NULL,
    PRIMARY KEY (exchange, queue, binding_key)
);
CREATE TABLE IF NOT EXISTS bus_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    available_at REAL NOT NULL,
    claimed_by TEXT,
    claimed_until REAL,
    created_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS ix_bus_messages_due ON bus_messages (queue, available_at);
CREATE INDEX IF NOT EXISTS ix_bus_messages_claimed_by ON bus_messages (claimed_by);
CREATE TABLE IF NOT EXISTS bus_dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_bus_dead_letters_queue ON bus_dead_letters (queue, seq);
"""

# In-process wake-ups: (bus file, queue) -> events of the subscriptions consuming it.
_wakers: dict[tuple[str, str], set[asyncio.Event]] = {}


def _wake(path: str, queues: Iterable[str]) -> None:
    for queue in queues:
        for event in _wakers.get((path, queue), ()):
            event.set()


class EmbeddedBroker(Broker):
    messaging_system = "roomee_embedded"  # a topic exchange emulated in a database file, not RabbitMQ

    def __init__(
        self,
        path: str | Path,
        exchange: str = "roomee",
        *,
        retry_delays_ms: Iterable[int] = (1000, 2000, 4000),
        prefetch: int = 100,
        poll_interval: float = 0.5,
        lease_seconds: float = 60.0,
        shutdown_grace_seconds: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self.exchange = exchange
        self.retry_delays = tuple(ms / 1000 for ms in retry_delays_ms)
        self.prefetch = prefetch
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.declared_queues: set[str] = set()
        self.instance_id = uuid.uuid4().hex
        self._key = ""
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._subscriptions: set[_EmbeddedSubscription] = set()
        self._heartbeat: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._conn is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._key = str(self.path.resolve())
        # Autocommit mode: every transaction below is an explicit BEGIN IMMEDIATE ... COMMIT.
        conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=30)
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "synchronous=NORMAL"):
            await conn.execute(f"PRAGMA {pragma}")
        await conn.executescript(SCHEMA)
        self._conn = conn
        self._heartbeat = asyncio.create_task(self._renew_leases(), name="roomee-bus-leases")

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.cancel()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def ping(self) -> None:
        if self._conn is None:
            raise BrokerUnavailable("embedded bus not started")
        async with self._lock:
            await self._conn.execute("SELECT 1")

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._conn is None:
            raise BrokerUnavailable("embedded bus not started")
        async with self._lock:
            conn = self._conn
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            else:
                await conn.execute("COMMIT")

    async def _renew_leases(self) -> None:
        notice = RetryNotice(log, "renewing the bus leases")  # said once, and its recovery once
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                async with self._transaction() as conn:
                    await conn.execute(
                        "UPDATE bus_messages SET claimed_until = ? WHERE claimed_by LIKE ?",
                        (time.time() + self.lease_seconds, f"{self.instance_id}:%"),
                    )
                notice.succeeded()
            except Exception as exc:
                notice.failed(exc, traceback=True)

    # -- publishing --------------------------------------------------------------------------

    async def publish_batch(self, messages: Sequence[Message]) -> list[Message]:
        if not messages:
            return []
        now = time.time()
        touched: set[str] = set()
        unroutable: list[Message] = []
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "SELECT queue, binding_key FROM bus_bindings WHERE exchange = ?", (self.exchange,)
            )
            bindings = await cursor.fetchall()
            rows = []
            for message in messages:
                queues = {queue for queue, key in bindings if topic_matches(key, message.routing_key)}
                if not queues and message.mandatory:
                    unroutable.append(message)
                headers = json.dumps(message.headers, default=str)
                for queue in sorted(queues):
                    rows.append(
                        (queue, message.routing_key, message.message_id, headers, message.body, now, now)
                    )
                touched |= queues
            if rows:
                await conn.executemany(
                    "INSERT INTO bus_messages"
                    " (queue, routing_key, message_id, headers, body, attempt, available_at, created_at)"
                    " VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
                    rows,
                )
        _wake(self._key, touched)
        return unroutable

    # -- topology ----------------------------------------------------------------------------

    async def declare_queue(self, queue: str, bindings: Iterable[str]) -> None:
        async with self._transaction() as conn:
            await conn.executemany(
                "INSERT OR IGNORE INTO bus_bindings (exchange, queue, binding_key) VALUES (?, ?, ?)",
                [(self.exchange, queue, key) for key in bindings],
            )
        self.declared_queues.add(queue)

    async def dead_letter_counts(self, queues: Iterable[str]) -> dict[str, int]:
        wanted = list(queues)
        if self._conn is None:
            raise BrokerUnavailable("embedded bus not started")
        async with self._lock:
            cursor = await self._conn.execute(
                "SELECT b.queue, (SELECT COUNT(*) FROM bus_dead_letters d WHERE d.queue = b.queue)"
                " FROM (SELECT DISTINCT queue FROM bus_bindings WHERE exchange = ?) b"
                " WHERE b.queue IN (SELECT value FROM json_each(?))",
                (self.exchange, json.dumps(wanted)),
            )
            return {queue: count for queue, count in await cursor.fetchall()}

    async def delete_queue(self, queue: str) -> None:
        async with self._transaction() as conn:
            for table in ("bus_bindings", "bus_messages", "bus_dead_letters"):
                await conn.execute(f"DELETE FROM {table} WHERE queue = ?", (queue,))
        self.declared_queues.discard(queue)

    # -- consuming ---------------------------------------------------------------------------

    async def consume(
        self,
        queue: str,
        bindings: list[str],
        handler: Handler,
        prefetch: int | None = None,
    ) -> Subscription:
        await self.declare_queue(queue, bindings)
        subscription = _EmbeddedSubscription(self, queue, handler, prefetch or self.prefetch)
        self._subscriptions.add(subscription)
        subscription.start()
        return subscription

    # -- dead letters ------------------------------------------------------------------------

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        if self._conn is None:
            raise BrokerUnavailable("embedded bus not started")
        async with self._lock:
            cursor = await self._conn.execute(
                "SELECT message_id, routing_key, body, headers, error, attempts, dead_at"
                " FROM bus_dead_letters WHERE queue = ? ORDER BY seq LIMIT ?",
                (queue, limit),
            )
            rows = await cursor.fetchall()
        return [
            DeadLetter(
                id=message_id,
                queue=queue,
                routing_key=routing_key,
                body=bytes(body),
                headers=json.loads(headers),
                error=error,
                attempts=attempts,
                dead_at=datetime.fromtimestamp(dead_at, timezone.utc),
            )
            for message_id, routing_key, body, headers, error, attempts, dead_at in rows
        ]

    async def replay_dead_letters(self, queue: str, ids: list[str] | None = None) -> int:
        now = time.time()
        async with self._transaction() as conn:
            if ids is None:
                cursor = await conn.execute(
                    "SELECT seq, routing_key, message_id, headers, body FROM bus_dead_letters"
                    " WHERE queue = ? ORDER BY seq",
                    (queue,),
                )
            else:
                cursor = await conn.execute(
                    "SELECT seq, routing_key, message_id, headers, body FROM bus_dead_letters"
                    " WHERE queue = ? AND message_id IN (SELECT value FROM json_each(?)) ORDER BY seq",
                    (queue, json.dumps([str(i) for i in ids])),
                )
            rows = await cursor.fetchall()
            if rows:
                await conn.executemany(
                    "INSERT INTO bus_messages"
                    " (queue, routing_key, message_id, headers, body, attempt, available_at, created_at)"
                    " VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
                    [
                        (
                            queue,
                            routing_key,
                            message_id,
                            json.dumps(without_broker_headers(json.loads(headers)), default=str),
                            body,
                            now,
                            now,
                        )
                        for _, routing_key, message_id, headers, body in rows
                    ],
                )
                await conn.execute(
                    "DELETE FROM bus_dead_letters WHERE seq IN (SELECT value FROM json_each(?))",
                    (json.dumps([row[0] for row in rows]),),
                )
        if rows:
            _wake(self._key, [queue])
            log.info("replayed dead letters", extra={"queue": queue, "count": len(rows)})
        return len(rows)


@dataclass
class _Outcome:
    seq: int
    ok: bool
    finished_at: float
    attempt: int = 1
    routing_key: str = ""
    message_id: str = ""
    headers: dict[str, Any] | None = None
    body: bytes = b""
    error: str | None = None
    permanent: bool = False


class _EmbeddedSubscription(Subscription):
    def __init__(self, broker: EmbeddedBroker, queue: str, handler: Handler, prefetch: int) -> None:
        self.broker = broker
        self.queue = queue
        self.handler = handler
        self.prefetch = max(1, prefetch)
        self.claim_id = f"{broker.instance_id}:{uuid.uuid4().hex}"
        self._wake = asyncio.Event()
        self._closing = False
        self._inflight: dict[int, asyncio.Task] = {}
        self._outcomes: list[_Outcome] = []
        self._loop_task: asyncio.Task | None = None

    def start(self) -> None:
        _wakers.setdefault((self.broker._key, self.queue), set()).add(self._wake)
        self._loop_task = asyncio.create_task(self._run(), name=f"roomee-bus-consumer:{self.queue}")

    async def cancel(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.broker._subscriptions.discard(self)
        waiters = _wakers.get((self.broker._key, self.queue))
        if waiters is not None:
            waiters.discard(self._wake)
            if not waiters:
                _wakers.pop((self.broker._key, self.queue), None)
        self._wake.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._inflight:
            _, pending = await asyncio.wait(
                set(self._inflight.values()), timeout=self.broker.shutdown_grace_seconds
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            async with self.broker._transaction() as conn:
                outcomes, self._outcomes = self._outcomes, []
                await self._settle(conn, outcomes)
                # Whatever is still claimed (handlers cancelled) goes back to the queue now.
                await conn.execute(
                    "UPDATE bus_messages SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?",
                    (self.claim_id,),
                )
        except BrokerUnavailable:
            pass

    async def _run(self) -> None:
        backoff = 0.5
        notice = RetryNotice(log, "the embedded bus consumer", extra={"queue": self.queue})
        while not self._closing:
            self._wake.clear()
            try:
                rows, next_due = await self._settle_and_claim()
                backoff = 0.5
                notice.succeeded()
            except Exception as exc:
                notice.failed(exc, "retrying with backoff up to 5 s", traceback=True)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for row in rows:
                seq = row[0]
                self._inflight[seq] = asyncio.create_task(self._deliver(*row), name=f"roomee-bus-deliver:{seq}")
            timeout = self.broker.poll_interval
            if next_due is not None:
                timeout = min(timeout, max(next_due - time.time(), 0.005))
            await self._sleep(timeout)

    async def _sleep(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _settle_and_claim(self) -> tuple[list[tuple], float | None]:
        outcomes, self._outcomes = self._outcomes, []
        try:
            async with self.broker._transaction() as conn:
                await self._settle(conn, outcomes)
                return await self._claim(conn)
        except BaseException:
            # Rolled back: settle these outcomes on the next attempt.
            self._outcomes = outcomes + self._outcomes
            raise

    async def _claim(self, conn: aiosqlite.Connection) -> tuple[list[tuple], float | None]:
        capacity = self.prefetch - len(self._inflight)
        if capacity <= 0 or self._closing:
            return [], None
        now = time.time()
        cursor = await conn.execute(
            "SELECT seq, routing_key, message_id, headers, body, attempt FROM bus_messages"
            " WHERE queue = ? AND available_at <= ? AND (claimed_until IS NULL OR claimed_until < ?)"
            " ORDER BY available_at, seq LIMIT ?",
            (self.queue, now, now, capacity),
        )
        rows = list(await cursor.fetchall())
        if rows:
            await conn.execute(
                "UPDATE bus_messages SET claimed_by = ?, claimed_until = ?"
                " WHERE seq IN (SELECT value FROM json_each(?))",
                (self.claim_id, now + self.broker.lease_seconds, json.dumps([r[0] for r in rows])),
            )
        next_due = None
        if len(rows) < capacity:
            # All claimable due rows were taken: sleep until the next one falls due.
            cursor = await conn.execute(
                "SELECT MIN(available_at) FROM bus_messages"
                " WHERE queue = ? AND (claimed_until IS NULL OR claimed_until < ?)",
                (self.queue, now),
            )
            (next_due,) = await cursor.fetchone()
        return rows, next_due

    async def _deliver(
        self, seq: int, routing_key: str, message_id: str, headers_json: str, body: bytes, attempt: int
    ) -> None:
        headers = json.loads(headers_json)
        body = bytes(body)
        delivery = Delivery(
            routing_key=routing_key,
            body=body,
            headers=headers,
            message_id=message_id,
            attempt=attempt,
            queue=self.queue,
        )
        outcome = _Outcome(seq=seq, ok=True, finished_at=0.0, attempt=attempt)
        try:
            await self.handler(delivery)
        except asyncio.CancelledError:
            # Shutdown: no outcome; the claim is released and the message delivered again later.
            self._inflight.pop(seq, None)
            raise
        except Exception as exc:
            outcome.ok = False
            outcome.error = f"{type(exc).__name__}: {exc}"[:2000]
            outcome.permanent = isinstance(exc, PermanentFailure)
            outcome.routing_key, outcome.message_id = routing_key, message_id
            outcome.headers, outcome.body = headers, body
        outcome.finished_at = time.time()
        self._outcomes.append(outcome)
        self._inflight.pop(seq, None)
        self._wake.set()

    async def _settle(self, conn: aiosqlite.Connection, outcomes: list[_Outcome]) -> None:
        if not outcomes:
            return
        done = [o.seq for o in outcomes if o.ok]
        retries, dead = [], []
        for o in outcomes:
            if o.ok:
                continue
            if o.attempt <= len(self.broker.retry_delays) and not o.permanent:
                retries.append(o)
            else:
                dead.append(o)
        if done:
            await conn.execute(
                "DELETE FROM bus_messages WHERE seq IN (SELECT value FROM json_each(?))", (json.dumps(done),)
            )
        if retries:
            await conn.executemany(
                "UPDATE bus_messages SET attempt = attempt + 1, available_at = ?, last_error = ?,"
                " claimed_by = NULL, claimed_until = NULL WHERE seq = ?",
                [(o.finished_at + self.broker.retry_delays[o.attempt - 1], o.error, o.seq) for o in retries],
            )
        if dead:
            rows = []
            for o in dead:
                headers = without_broker_headers(o.headers or {})
                headers.update(
                    {
                        ORIGINAL_ROUTING_KEY_HEADER: o.routing_key,
                        RETRY_COUNT_HEADER: o.attempt - 1,
                        ERROR_HEADER: o.error,
                        DEAD_AT_HEADER: format_timestamp(datetime.fromtimestamp(o.finished_at, timezone.utc)),
                    }
                )
                rows.append(
                    (self.queue, o.routing_key, o.message_id, json.dumps(headers, default=str), o.body,
                     o.attempt, o.error, o.finished_at)
                )
            await conn.executemany(
                "INSERT INTO bus_dead_letters"
                " (queue, routing_key, message_id, headers, body, attempts, error, dead_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            await conn.execute(
                "DELETE FROM bus_messages WHERE seq IN (SELECT value FROM json_each(?))",
                (json.dumps([o.seq for o in dead]),),
            )
