"""The transactional outbox: ``emit`` writes the event in the caller's transaction; ``OutboxRelay``
publishes committed rows and marks them sent.

A committed event is published at least once, whatever the broker does in between (the relay
backs off and retries, it never drops a row); consumers deduplicate by event id (the inbox).
A commit that wrote outbox rows wakes its database's relay at once (an ``after_commit`` hook),
so publication does not wait for the poll interval.
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
from roomee.kit.events.broker import Broker, BrokerUnavailable, Message
from roomee.kit.events.envelope import format_timestamp
from roomee.kit.events.tables import outbox_table

try:  # trace context travels in the message headers (W3C traceparent)
    from opentelemetry import propagate as _propagate
except ImportError:  # pragma: no cover - opentelemetry is a dependency; stay usable without it
    _propagate = None

log = logging.getLogger("roomee.events")

_PENDING_KEY = "roomee.outbox.pending_engines"
# Marks an event whose outbox row goes as soon as it is published (see ``emit``).
SENSITIVE_HEADER = "x-roomee-sensitive"
# sync Engine -> the wake-up events of the relays publishing that database.
_relay_wakeups: dict[Any, set[asyncio.Event]] = {}


# -- emitting -----------------------------------------------------------------------------------


async def emit(
    session: AsyncSession, routing_key: str, envelope: Mapping[str, Any], *, sensitive: bool = False
) -> None:
    """Write one event to the outbox in the session's current transaction.

    ``sensitive``: the event carries a secret (a sign-up link): its row is deleted as soon as it is
    published instead of being kept for inspection.
    """
    await session.execute(sa.insert(outbox_table).values(**_outbox_row(routing_key, envelope, sensitive)))
    _mark_pending(session)


async def emit_many(
    session: AsyncSession, items: Iterable[tuple[str, Mapping[str, Any]]], *, sensitive: bool = False
) -> None:
    """Write several ``(routing_key, envelope)`` events with one bulk insert (``sensitive``: see ``emit``)."""
    rows = [_outbox_row(routing_key, envelope, sensitive) for routing_key, envelope in items]
    if not rows:
        return
    await session.execute(sa.insert(outbox_table), rows)
    _mark_pending(session)


def _outbox_row(routing_key: str, envelope: Mapping[str, Any], sensitive: bool = False) -> dict[str, Any]:
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

    def nudge(self) -> None:
        """Publish now rather than at the next poll."""
        self._wakeup.set()

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
        """Publish one batch of unpublished rows; return how many were published."""
        table = outbox_table
        async with self.db.sessionmaker() as session:
            async with session.begin():
                stmt = (
                    sa.select(table.c.id, table.c.routing_key, table.c.body, table.c.headers)
                    .where(table.c.published_at.is_(None))
                    .order_by(table.c.created_at, table.c.id)
                    .limit(self.batch_size)
                )
                if self.db.is_postgres:
                    stmt = stmt.with_for_update(skip_locked=True)
                rows = (await session.execute(stmt)).all()
                if not rows:
                    metrics.outbox_backlog.labels(self.service).set(0)
                    return 0
                messages = [_message(row) for row in rows]
                by_key = Counter(m.routing_key for m in messages)
                try:
                    await self.broker.publish_batch(messages)
                except Exception:
                    for routing_key, count in by_key.items():
                        metrics.amqp_messages_total.labels(self.service, routing_key, "publish", "error").inc(count)
                    raise
                await session.execute(
                    sa.update(table)
                    .where(table.c.id.in_([row.id for row in rows]))
                    .values(published_at=datetime.now(timezone.utc))
                )
                secret_ids = [row.id for row, message in zip(rows, messages) if message.headers.get(SENSITIVE_HEADER)]
                if secret_ids:
                    await session.execute(sa.delete(table).where(table.c.id.in_(secret_ids)))
        for routing_key, count in by_key.items():
            metrics.amqp_messages_total.labels(self.service, routing_key, "publish", "ok").inc(count)
        if len(rows) >= self.batch_size:
            await self._refresh_backlog()
        else:
            metrics.outbox_backlog.labels(self.service).set(0)
        log.debug("outbox published", extra={"service": self.service, "count": len(rows)})
        return len(rows)

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


def _message(row: Any) -> Message:
    body = row.body.encode("utf-8")
    try:
        headers = json.loads(row.headers) if row.headers else {}
    except ValueError:
        headers = {}
    message_id = row.id
    try:
        event_id = json.loads(row.body).get("id")
        if event_id:
            message_id = str(event_id)
    except (ValueError, AttributeError):
        pass
    return Message(routing_key=row.routing_key, body=body, headers=headers, message_id=message_id)
