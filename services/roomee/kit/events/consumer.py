"""Idempotent event consumers: one database transaction per delivery, guarded by the inbox."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit import metrics
from roomee.kit.db import Database
from roomee.kit.events.broker import Broker, Delivery, PermanentFailure, Subscription
from roomee.kit.events.envelope import Envelope
from roomee.kit.events.tables import inbox_table

try:
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - opentelemetry is a dependency; stay usable without it
    _propagate = None
    _trace = None

log = logging.getLogger("roomee.events")

EventHandler = Callable[[AsyncSession, dict[str, Any], Delivery], Awaitable[None]]


class EventConsumer:
    """Consumes ``queue`` (bound with ``bindings``) for one service.

    For each delivery, in ONE transaction on ``db``: record ``(queue, envelope id)`` in the inbox;
    if it was already there the event was handled before and is skipped (acked); otherwise call
    ``handler(session, envelope, delivery)``; the handler may ``emit`` in the same transaction.
    The commit acks the message; any exception rolls back (inbox row included) and sends the
    message down the broker's retry path (1 s, 2 s, 4 s, then the dead-letter queue).
    A body that is not a valid envelope is dead-lettered at once. Inbox rows older than
    ``inbox_retention_seconds`` (default 7 days) are pruned hourly.
    """

    def __init__(
        self,
        db: Database,
        broker: Broker,
        service: str,
        queue: str,
        bindings: list[str],
        handler: EventHandler,
        *,
        prefetch: int | None = None,
        inbox_retention_seconds: float = 7 * 24 * 3600,
        prune_interval_seconds: float = 3600,
    ) -> None:
        self.db = db
        self.broker = broker
        self.service = service
        self.queue = queue
        self.bindings = list(bindings)
        self.handler = handler
        self.prefetch = prefetch or db.settings.consumer_prefetch
        self.inbox_retention_seconds = inbox_retention_seconds
        self.prune_interval_seconds = prune_interval_seconds
        self._subscription: Subscription | None = None
        self._pruner: asyncio.Task | None = None
        self._insert_inbox = postgresql.insert if db.is_postgres else sqlite.insert

    async def start(self) -> None:
        if self._subscription is None:
            self._subscription = await self.broker.consume(
                self.queue, self.bindings, self._on_delivery, self.prefetch
            )
            self._pruner = asyncio.create_task(self._prune_periodically(), name=f"roomee-inbox-prune:{self.queue}")
            log.info("consumer started", extra={"service": self.service, "queue": self.queue})

    async def stop(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.cancel()
        pruner, self._pruner = self._pruner, None
        if pruner is not None:
            pruner.cancel()
            await asyncio.gather(pruner, return_exceptions=True)

    async def prune_inbox(self) -> int:
        """Forget handled event ids older than the retention; return how many."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=self.inbox_retention_seconds)
        async with self.db.transaction() as session:
            result = await session.execute(
                sa.delete(inbox_table).where(inbox_table.c.queue == self.queue, inbox_table.c.handled_at < cutoff)
            )
            return result.rowcount or 0

    async def _prune_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.prune_interval_seconds)
            try:
                await self.prune_inbox()
            except Exception:
                log.warning("inbox pruning failed", extra={"service": self.service, "queue": self.queue}, exc_info=True)

    async def _on_delivery(self, delivery: Delivery) -> None:
        routing_key = delivery.routing_key
        try:
            envelope = delivery.envelope
            if not isinstance(envelope, dict):
                raise PermanentFailure("the message body is not a JSON object")
            parsed = Envelope.model_validate(envelope)
        except (ValueError, PermanentFailure) as exc:
            self._count(routing_key, "dead")
            log.error(
                "invalid event dead-lettered",
                extra={"service": self.service, "queue": self.queue, "routing_key": routing_key,
                       "message_id": delivery.message_id, "error": str(exc)[:500]},
            )
            if isinstance(exc, PermanentFailure):
                raise
            raise PermanentFailure(f"invalid envelope: {exc}") from exc

        context = _propagate.extract(delivery.headers) if _propagate is not None else None
        tracer = _trace.get_tracer("roomee") if _trace is not None else None
        attributes = {
            "messaging.system": "rabbitmq",
            "messaging.destination.name": self.queue,
            "messaging.rabbitmq.destination.routing_key": routing_key,
            "messaging.message.id": parsed.id,
            "roomee.event.type": parsed.type,
            "roomee.delivery.attempt": delivery.attempt,
        }
        try:
            if tracer is not None:
                with tracer.start_as_current_span(
                    f"{self.queue} process",
                    context=context,
                    kind=_trace.SpanKind.CONSUMER,
                    attributes=attributes,
                ):
                    handled = await self._handle_once(parsed.id, envelope, delivery)
            else:
                handled = await self._handle_once(parsed.id, envelope, delivery)
        except Exception as exc:
            final = isinstance(exc, PermanentFailure) or delivery.attempt >= self.broker.max_attempts
            self._count(routing_key, "dead" if final else "retry")
            log.warning(
                "event handler failed; %s",
                "dead-lettering" if final else "will retry",
                extra={"service": self.service, "queue": self.queue, "routing_key": routing_key,
                       "event_id": parsed.id, "attempt": delivery.attempt},
                exc_info=True,
            )
            raise
        if not handled:
            self._count(routing_key, "duplicate")
            log.info(
                "duplicate event skipped",
                extra={"service": self.service, "queue": self.queue, "event_id": parsed.id},
            )
            return
        self._count(routing_key, "ok")
        timestamp = parsed.metadata.timestamp
        if timestamp is not None:
            lag = time.time() - timestamp.timestamp()
            metrics.consumer_lag_seconds.labels(self.service, self.queue).observe(max(lag, 0.0))

    async def _handle_once(self, event_id: str, envelope: dict[str, Any], delivery: Delivery) -> bool:
        async with self.db.transaction() as session:
            inserted = await session.execute(
                self._insert_inbox(inbox_table)
                .values(queue=self.queue, event_id=event_id, handled_at=datetime.now(timezone.utc))
                .on_conflict_do_nothing()
                .returning(inbox_table.c.event_id)
            )
            if inserted.first() is None:
                return False
            await self.handler(session, envelope, delivery)
        return True

    def _count(self, routing_key: str, status: str) -> None:
        metrics.amqp_messages_total.labels(self.service, routing_key, "consume", status).inc()
