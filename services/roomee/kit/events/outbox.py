"""The transactional outbox: ``emit`` writes the event in the caller's transaction; ``OutboxRelay``
publishes committed rows and marks them sent.

A committed event is published at least once, whatever the broker does in between (the relay
backs off and retries, it never drops a row); consumers deduplicate by event id (the inbox).
A commit that wrote outbox rows wakes its database's relay at once (an ``after_commit`` hook),
so publication does not wait for the poll interval.

Events are published ``mandatory``: one whose routing key no queue is bound to (a consumer not
deployed yet, a binding missing) comes back from the broker and its row stays in the outbox, put
aside with a backoff of its own (2 s doubling to 60 s) so the rows after it go on; it is counted
in ``outbox_unroutable_events`` and published once a bound queue appears. An event that has no
consumer by design is emitted with ``require_consumer=False``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from roomee.kit import metrics
from roomee.kit.db import Database
from roomee.kit.events.broker import Broker, BrokerUnavailable, Message, messaging_attributes
from roomee.kit.events.envelope import format_timestamp
from roomee.kit.events.gauges import outbox_unroutable_events, routing_key_family
from roomee.kit.events.tables import outbox_table

try:  # trace context travels in the message headers (W3C traceparent)
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - opentelemetry is a dependency; stay usable without it
    _propagate = None
    _trace = None

log = logging.getLogger("roomee.events")

_PENDING_KEY = "roomee.outbox.pending_engines"
# Marks an event whose outbox row goes as soon as it is published (see ``emit``).
SENSITIVE_HEADER = "x-roomee-sensitive"
# Marks an event published without ``mandatory`` (``emit(..., require_consumer=False)``).
BROADCAST_HEADER = "x-roomee-broadcast"
# How many times the broker found no queue for the event (kept on the row, never sent).
UNROUTABLE_HEADER = "x-roomee-unroutable"
_ROW_ONLY_HEADERS = (BROADCAST_HEADER, UNROUTABLE_HEADER)
UNROUTABLE_FIRST_DELAY = 2.0
UNROUTABLE_MAX_DELAY = 60.0
# An unroutable row is put aside by moving its ``created_at`` past "now" by its backoff plus this
# margin, and the relay takes rows created before now + margin: rows written by a host whose clock
# runs ahead (less than the margin) are not held back, and no schema change was needed.
NOT_BEFORE_MARGIN = timedelta(minutes=10)
# sync Engine -> the wake-up events of the relays publishing that database.
_relay_wakeups: dict[Any, set[asyncio.Event]] = {}


# -- emitting -----------------------------------------------------------------------------------


async def emit(
    session: AsyncSession,
    routing_key: str,
    envelope: Mapping[str, Any],
    *,
    sensitive: bool = False,
    require_consumer: bool = True,
) -> None:
    """Write one event to the outbox in the session's current transaction.

    ``sensitive``: the event carries a secret (a sign-up link): its row is deleted as soon as it is
    published instead of being kept for inspection.
    ``require_consumer``: the event must reach at least one queue, else it waits in the outbox (see
    the module). False for a broadcast that may have no consumer: published once, routed or not.
    """
    row = _outbox_row(routing_key, envelope, sensitive, require_consumer)
    await session.execute(sa.insert(outbox_table).values(**row))
    _mark_pending(session)


async def emit_many(
    session: AsyncSession,
    items: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    sensitive: bool = False,
    require_consumer: bool = True,
) -> None:
    """Write several ``(routing_key, envelope)`` events with one bulk insert (keywords: see ``emit``)."""
    rows = [_outbox_row(routing_key, envelope, sensitive, require_consumer) for routing_key, envelope in items]
    if not rows:
        return
    await session.execute(sa.insert(outbox_table), rows)
    _mark_pending(session)


def _outbox_row(
    routing_key: str, envelope: Mapping[str, Any], sensitive: bool = False, require_consumer: bool = True
) -> dict[str, Any]:
    if not routing_key:
        raise ValueError("routing_key is required")
    body = dict(envelope)
    if not body.get("id"):
        body["id"] = str(uuid.uuid4())
    headers: dict[str, str] = {}
    if _propagate is not None:
        _propagate.inject(headers)
    if sensitive:
        headers[SENSITIVE_HEADER] = "1"
    if not require_consumer:
        headers[BROADCAST_HEADER] = "1"
    return {
        "id": str(uuid.uuid4()),
        "routing_key": routing_key,
        "body": json.dumps(body, default=_json_default, separators=(",", ":")),
        "headers": json.dumps(headers),
        "created_at": _next_created_at(),
        "published_at": None,
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, Decimal)):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_clock_lock = threading.Lock()
_last_created_at = datetime.min.replace(tzinfo=timezone.utc)


def _next_created_at() -> datetime:
    """UTC now, strictly increasing within the process: events of one transaction keep their order."""
    global _last_created_at
    with _clock_lock:
        now = datetime.now(timezone.utc)
        if now <= _last_created_at:
            now = _last_created_at + timedelta(microseconds=1)
        _last_created_at = now
        return now


def _mark_pending(session: AsyncSession) -> None:
    try:
        bind = session.sync_session.get_bind()
    except Exception:  # no single bind (per-mapper binds): the relay's poll picks the row up
        return
    engine = getattr(bind, "engine", bind)
    session.sync_session.info.setdefault(_PENDING_KEY, set()).add(engine)


@event.listens_for(Session, "after_commit")
def _wake_relays_after_commit(session: Session) -> None:
    for engine in session.info.pop(_PENDING_KEY, ()):
        for wakeup in _relay_wakeups.get(engine, ()):
            wakeup.set()


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


# -- relaying -----------------------------------------------------------------------------------


class OutboxRelay:
    """Publishes one service database's outbox through the broker, in creation order.

    Each cycle takes up to ``batch_size`` unpublished rows (``FOR UPDATE SKIP LOCKED`` on
    PostgreSQL, so replicas share the work), publishes them as one confirmed batch and marks them
    in one UPDATE. A broker failure is logged and retried with backoff (0.5 s doubling to 5 s);
    the rows stay. Published rows are kept ``retention_seconds`` (default 10 min, for inspection)
    and then deleted.
    """

    def __init__(
        self,
        db: Database,
        broker: Broker,
        service: str,
        *,
        batch_size: int | None = None,
        poll_interval: float | None = None,
        retention_seconds: float = 600.0,
        cleanup_interval: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.db = db
        self.broker = broker
        self.service = service
        self.batch_size = batch_size or db.settings.outbox_batch_size
        self.poll_interval = poll_interval if poll_interval is not None else db.settings.outbox_poll_interval_seconds
        self.retention_seconds = retention_seconds
        self.cleanup_interval = cleanup_interval
        self.stop_timeout = stop_timeout
        self._wakeup = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._engine = db.engine.sync_engine
        self._unroutable_families: set[str] = set()
        self._tracer = None  # looked up once (see ``_publish_spans``)

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._stop_requested.clear()
        _relay_wakeups.setdefault(self._engine, set()).add(self._wakeup)
        self._wakeup.set()  # publish whatever an earlier run left behind
        self._task = asyncio.create_task(self._run(), name=f"roomee-outbox-relay:{self.service}")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping = True
        self._stop_requested.set()
        self._wakeup.set()
        task, self._task = self._task, None
        try:
            await asyncio.wait_for(asyncio.shield(task), self.stop_timeout)
        except asyncio.TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        finally:
            wakeups = _relay_wakeups.get(self._engine)
            if wakeups is not None:
                wakeups.discard(self._wakeup)
                if not wakeups:
                    _relay_wakeups.pop(self._engine, None)

    async def _run(self) -> None:
        backoff = 0.5
        failures = 0
        last_cleanup = 0.0
        while not self._stopping:
            self._wakeup.clear()
            try:
                published = await self.publish_pending()
            except Exception as exc:
                failures += 1
                # An outage logs once (WARNING) and its end once (INFO), not every retry.
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "outbox publish failed; events wait in the outbox, retrying every %.1f s or less",
                    backoff,
                    extra={"service": self.service, "error": f"{type(exc).__name__}: {exc}"},
                    exc_info=not isinstance(exc, (BrokerUnavailable, ConnectionError, OSError)),
                )
                await self._refresh_backlog()
                await self._sleep(backoff, self._stop_requested)  # commits do not cut the backoff short
                backoff = min(backoff * 2, 5.0)
                continue
            if failures:
                log.info("outbox publishing resumed after %d failed attempts", failures, extra={"service": self.service})
                failures = 0
            backoff = 0.5
            if time.monotonic() - last_cleanup >= self.cleanup_interval:
                last_cleanup = time.monotonic()
                try:
                    await self.delete_published()
                    # Also learns rows an earlier run (or another replica) put aside.
                    await self.refresh_unroutable()
                except Exception:
                    log.warning("outbox cleanup failed", extra={"service": self.service}, exc_info=True)
            if published >= self.batch_size:
                continue  # more are waiting
            await self._sleep(self.poll_interval, self._wakeup)

    @staticmethod
    async def _sleep(timeout: float, wakeup: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(wakeup.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def publish_pending(self) -> int:
        """Publish one batch of due rows; return how many were taken (published or put aside as
        unroutable)."""
        table = outbox_table
        now = datetime.now(timezone.utc)
        async with self.db.sessionmaker() as session:
            async with session.begin():
                stmt = (
                    sa.select(table.c.id, table.c.routing_key, table.c.body, table.c.headers)
                    .where(table.c.published_at.is_(None), table.c.created_at <= now + NOT_BEFORE_MARGIN)
                    .order_by(table.c.created_at, table.c.id)
                    .limit(self.batch_size)
                )
                if self.db.is_postgres:
                    stmt = stmt.with_for_update(skip_locked=True)
                rows = (await session.execute(stmt)).all()
                if not rows:
                    if self._unroutable_families:  # rows put aside are still unpublished
                        await self._refresh_backlog()
                    else:
                        metrics.outbox_backlog.labels(self.service).set(0)
                    return 0
                messages = [_message(row) for row in rows]
                spans = self._publish_spans(messages)
                try:
                    returned = await self.broker.publish_batch(messages) or ()
                except Exception as exc:
                    for routing_key, count in Counter(m.routing_key for m in messages).items():
                        metrics.amqp_messages_total.labels(self.service, routing_key, "publish", "error").inc(count)
                    _end_spans(spans, lambda _message: type(exc).__name__)
                    raise
                unroutable = {id(message) for message in returned}
                _end_spans(spans, lambda message: "unroutable" if id(message) in unroutable else None)
                published = [(row, m) for row, m in zip(rows, messages) if id(m) not in unroutable]
                put_aside = [(row, m) for row, m in zip(rows, messages) if id(m) in unroutable]
                if published:
                    await session.execute(
                        sa.update(table)
                        .where(table.c.id.in_([row.id for row, _ in published]))
                        .values(published_at=datetime.now(timezone.utc))
                    )
                secret_ids = [row.id for row, message in published if message.headers.get(SENSITIVE_HEADER)]
                if secret_ids:
                    await session.execute(sa.delete(table).where(table.c.id.in_(secret_ids)))
                if put_aside:
                    await self._put_aside(session, [row for row, _ in put_aside], now)
        by_key = Counter(m.routing_key for _, m in published)
        for routing_key, count in by_key.items():
            metrics.amqp_messages_total.labels(self.service, routing_key, "publish", "ok").inc(count)
        for routing_key, count in Counter(m.routing_key for _, m in put_aside).items():
            metrics.amqp_messages_total.labels(self.service, routing_key, "publish", "unroutable").inc(count)
        if put_aside or any(_was_unroutable(row) for row, _ in published):
            await self.refresh_unroutable()
        if len(rows) >= self.batch_size or self._unroutable_families:
            await self._refresh_backlog()
        else:
            metrics.outbox_backlog.labels(self.service).set(0)
        log.debug("outbox published", extra={"service": self.service, "count": len(published)})
        return len(rows)

    def _publish_spans(self, messages: list[Message]) -> list[tuple[Message, Any]]:
        """A ``PRODUCER`` span per event, in the trace of the request that wrote it (its row keeps the
        ``traceparent``); the message carries the publish span's context on to its consumers."""
        if _trace is None:
            return []
        if self._tracer is None:
            self._tracer = _trace.get_tracer("roomee")
        system = getattr(self.broker, "messaging_system", "rabbitmq")
        spans = []
        for message in messages:
            span = self._tracer.start_span(
                f"publish {message.routing_key}",
                context=_propagate.extract(message.headers),
                kind=_trace.SpanKind.PRODUCER,
                attributes=messaging_attributes(system, self.db.settings.exchange, "send",
                                                routing_key=message.routing_key, message_id=message.message_id),
            )
            _propagate.inject(message.headers, context=_trace.set_span_in_context(span))
            spans.append((message, span))
        return spans

    async def _put_aside(self, session: AsyncSession, rows: list[Any], now: datetime) -> None:
        """Keep unroutable rows, each due again after its own backoff, so later rows go on."""
        table = outbox_table
        params = []
        first = []
        for row in rows:
            headers = _row_headers(row)
            attempts = int(headers.get(UNROUTABLE_HEADER) or 0) + 1
            headers[UNROUTABLE_HEADER] = attempts
            delay = min(UNROUTABLE_FIRST_DELAY * 2 ** (attempts - 1), UNROUTABLE_MAX_DELAY)
            params.append({
                "row_id": row.id,
                "new_headers": json.dumps(headers),
                "due": now + timedelta(seconds=delay) + NOT_BEFORE_MARGIN,
            })
            if attempts == 1:
                first.append(row.routing_key)
        await session.execute(
            sa.update(table)
            .where(table.c.id == sa.bindparam("row_id"))
            .values(headers=sa.bindparam("new_headers"), created_at=sa.bindparam("due")),
            params,
        )
        # Once per event, not once per retry: a missing consumer is an alert, not a log flood.
        if first:
            log.warning(
                "events kept in the outbox: no queue is bound to their routing key; retrying with backoff",
                extra={"service": self.service, "count": len(first), "routing_keys": sorted(set(first))},
            )

    async def refresh_unroutable(self) -> dict[str, int]:
        """Count the rows put aside as unroutable by routing-key family, and export the gauge."""
        table = outbox_table
        async with self.db.sessionmaker() as session:
            result = await session.execute(
                sa.select(table.c.routing_key, sa.func.count())
                .where(table.c.published_at.is_(None), table.c.headers.like(f'%"{UNROUTABLE_HEADER}"%'))
                .group_by(table.c.routing_key)
            )
            counts: Counter[str] = Counter()
            for routing_key, count in result.all():
                counts[routing_key_family(routing_key)] += count
        for family in self._unroutable_families - set(counts):
            outbox_unroutable_events.labels(self.service, family).set(0)
        for family, count in counts.items():
            outbox_unroutable_events.labels(self.service, family).set(count)
        self._unroutable_families = set(counts)
        return dict(counts)

    async def backlog(self) -> int:
        """How many committed events are not published yet."""
        table = outbox_table
        async with self.db.sessionmaker() as session:
            result = await session.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.published_at.is_(None))
            )
            return int(result.scalar_one())

    async def _refresh_backlog(self) -> None:
        try:
            metrics.outbox_backlog.labels(self.service).set(await self.backlog())
        except Exception:
            log.debug("could not count the outbox backlog", extra={"service": self.service}, exc_info=True)

    async def delete_published(self) -> int:
        """Delete rows published more than ``retention_seconds`` ago."""
        table = outbox_table
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=self.retention_seconds)
        async with self.db.transaction() as session:
            result = await session.execute(
                sa.delete(table).where(table.c.published_at.is_not(None), table.c.published_at < cutoff)
            )
            return result.rowcount or 0


def _row_headers(row: Any) -> dict[str, Any]:
    try:
        headers = json.loads(row.headers) if row.headers else {}
    except ValueError:
        return {}
    return headers if isinstance(headers, dict) else {}


def _was_unroutable(row: Any) -> bool:
    return f'"{UNROUTABLE_HEADER}"' in (row.headers or "")


def _end_spans(spans: list[tuple[Message, Any]], error: Any) -> None:
    """End the publish spans; ``error(message)`` names why one was not published (``None``: it was)."""
    for message, span in spans:
        reason = error(message)
        if reason is not None:
            span.set_attribute("error.type", reason)
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, reason))
        span.end()


def _message(row: Any) -> Message:
    body = row.body.encode("utf-8")
    headers = _row_headers(row)
    broadcast = bool(headers.get(BROADCAST_HEADER))
    for name in _ROW_ONLY_HEADERS:
        headers.pop(name, None)
    message_id = row.id
    try:
        event_id = json.loads(row.body).get("id")
        if event_id:
            message_id = str(event_id)
    except (ValueError, AttributeError):
        pass
    return Message(
        routing_key=row.routing_key, body=body, headers=headers, message_id=message_id, mandatory=not broadcast
    )
