"""Idempotent event consumers: one database transaction per delivery, guarded by the inbox."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit import metrics
from roomee.kit.db import Database
from roomee.kit.events.broker import Broker, Delivery, PermanentFailure, Subscription, messaging_attributes
from roomee.kit.events.envelope import Envelope
from roomee.kit.events.tables import inbox_table
from roomee.kit.events.topic import topic_matches

try:
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - opentelemetry is a dependency; stay usable without it
    _propagate = None
    _trace = None

log = logging.getLogger("roomee.events")

EventHandler = Callable[[AsyncSession, dict[str, Any], Delivery], Awaitable[None]]
# A batch handler may return the deliveries that failed, by index in the list it was given: the
# others commit, the failed ones go down the retry path (see ``EventConsumer``).
BatchFailures = Mapping[int, BaseException]
BatchHandler = Callable[[AsyncSession, list[tuple[dict[str, Any], Delivery]]], Awaitable[BatchFailures | None]]


_INBOX_FROM_ARRAY = (
    postgresql.insert(inbox_table)
    .from_select(
        ["queue", "event_id", "handled_at"],
        sa.select(
            sa.bindparam("queue", type_=sa.String),
            sa.func.unnest(sa.bindparam("event_ids", type_=postgresql.ARRAY(sa.String))),
            sa.bindparam("now", type_=sa.DateTime(timezone=True)),
        ),
    )
    .on_conflict_do_nothing()
    .returning(inbox_table.c.event_id)
)


_MAX_COUNTED_KEYS = 1024


class EventConsumer:
    """Consumes ``queue`` (bound with ``bindings``) for one service.

    For each delivery, in ONE transaction on ``db``: record ``(queue, envelope id)`` in the inbox;
    if it was already there the event was handled before and is skipped (acked); otherwise call
    ``handler(session, envelope, delivery)``; the handler may ``emit`` in the same transaction.
    The commit acks the message; any exception rolls back (inbox row included) and sends the
    message down the broker's retry path (1 s, 2 s, 4 s, then the dead-letter queue).
    A body that is not a valid envelope is dead-lettered at once. Inbox rows older than
    ``inbox_retention_seconds`` (default 7 days) are pruned hourly.

    With a ``batch_handler`` the deliveries that arrive together (up to ``batch_size``, waiting at
    most ``batch_window_seconds`` when the consumer is idle) share one transaction: one inbox
    insert for all of them, one ``batch_handler(session, [(envelope, delivery), ...])`` call for
    the new ones, one commit. One batch is handled at a time; deliveries arriving meanwhile make
    the next batch, so batches grow with the load (prefetch permitting).
    If the batch fails, each delivery is retried alone so one bad event cannot hold back the
    others; only the failing ones go down the retry path. A batch handler that knows which
    deliveries failed (a provider refused some requests of a batch, say) returns them as
    ``{index: exception}``: the transaction still commits what the handler wrote (e.g. the record
    of every attempt), the failed deliveries' inbox rows are left out of it, and only those go
    down the retry path, without handling the rest of the batch again.
    """

    def __init__(
        self,
        db: Database,
        broker: Broker,
        service: str,
        queue: str,
        bindings: list[str],
        handler: EventHandler | None,
        *,
        batch_handler: BatchHandler | None = None,
        batch_size: int = 200,
        batch_window_seconds: float = 0.005,
        stop_timeout_seconds: float = 10.0,
        prefetch: int | None = None,
        inbox_retention_seconds: float = 7 * 24 * 3600,
        prune_interval_seconds: float = 3600,
    ) -> None:
        self.db = db
        self.broker = broker
        self.service = service
        self.queue = queue
        self.bindings = list(bindings)
        if handler is None and batch_handler is None:
            raise ValueError("a consumer needs a handler or a batch_handler")
        self.handler = handler
        self.batch_handler = batch_handler
        self.batch_size = batch_size
        self.batch_window_seconds = batch_window_seconds
        self.stop_timeout_seconds = stop_timeout_seconds
        self._batch: list[tuple[str, dict[str, Any], Delivery, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self._flushing: asyncio.Task | None = None
        self.prefetch = prefetch or db.settings.consumer_prefetch
        self.inbox_retention_seconds = inbox_retention_seconds
        self.prune_interval_seconds = prune_interval_seconds
        self._subscription: Subscription | None = None
        self._pruner: asyncio.Task | None = None
        self._insert_inbox = postgresql.insert if db.is_postgres else sqlite.insert
        self._tracer_value = None
        self._counters: dict[tuple[str, str], Any] = {}
        self._lag = metrics.consumer_lag_seconds.labels(service, queue)

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
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
        if self._flushing is not None:  # a batch already handed to its handler finishes its transaction
            await asyncio.wait({self._flushing}, timeout=self.stop_timeout_seconds)

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

        try:
            if self.batch_handler is not None:  # traced per batch (``_process_batch``)
                handled = await self._handle_in_batch(parsed.id, envelope, delivery)
            elif (tracer := self._tracer()) is not None:
                with tracer.start_as_current_span(
                    f"process {self.queue}",
                    context=_propagate.extract(delivery.headers),
                    kind=_trace.SpanKind.CONSUMER,
                    attributes=self._process_attributes(delivery, parsed.type),
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
            self._lag.observe(max(lag, 0.0))

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

    # -- batching -------------------------------------------------------------------------------

    async def _handle_in_batch(self, event_id: str, envelope: dict[str, Any], delivery: Delivery) -> bool:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._batch.append((event_id, envelope, delivery, future))
        if len(self._batch) >= self.batch_size:
            self._start_flush()
        elif self._flusher is None and self._flushing is None:
            self._flusher = asyncio.create_task(self._flush_after_window())
        return await future

    async def _flush_after_window(self) -> None:
        await asyncio.sleep(self.batch_window_seconds)
        self._flusher = None
        self._start_flush()

    def _start_flush(self) -> None:
        # Batches grow with the load: while one batch is handled, deliveries wait in ``_batch`` and
        # the next batch takes them together when it finishes. Deliveries cancelled while waiting
        # (shutdown) are left out: the broker redelivers them.
        self._batch = [item for item in self._batch if not item[3].done()]
        if self._flushing is not None or not self._batch:
            return
        items, self._batch = self._batch[: self.batch_size], self._batch[self.batch_size :]
        self._flushing = asyncio.create_task(self._flush(items))
        self._flushing.add_done_callback(self._flush_done)

    def _flush_done(self, _task: asyncio.Task) -> None:
        self._flushing = None
        self._start_flush()

    async def _flush(self, items: list[tuple[str, dict[str, Any], Delivery, asyncio.Future]]) -> None:
        try:
            outcomes = await self._process_batch(items)
        except Exception:
            if len(items) > 1:
                log.warning("batch failed; handling its %d events one by one", len(items),
                            extra={"service": self.service, "queue": self.queue}, exc_info=True)
            outcomes = [await self._process_alone(item) for item in items]
        for (*_item, future), outcome in zip(items, outcomes):
            if future.done():  # the delivery was cancelled (shutdown): the broker redelivers it
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _process_alone(self, item: tuple[str, dict[str, Any], Delivery, asyncio.Future]) -> bool | BaseException:
        try:
            (outcome,) = await self._process_batch([item])
        except Exception as exc:
            return exc
        return outcome

    async def _process_batch(
        self, items: list[tuple[str, dict[str, Any], Delivery, asyncio.Future]]
    ) -> list[bool | BaseException]:
        tracer = self._tracer()
        if tracer is None:
            return await self._process_batch_untraced(items)
        if len(items) == 1:  # one event: its span continues the publisher's trace, with the event's attributes
            _event_id, envelope, delivery, _future = items[0]
            with tracer.start_as_current_span(
                f"process {self.queue}",
                context=_propagate.extract(delivery.headers),
                kind=_trace.SpanKind.CONSUMER,
                attributes=self._process_attributes(delivery, envelope.get("type")),
            ):
                return await self._process_batch_untraced(items)
        # One span per batch, linked to each message's trace (OpenTelemetry's messaging
        # conventions for batch processing): a span per message costs more than handling it.
        links = []
        for _event_id, _envelope, delivery, _future in items:
            span_context = _trace.get_current_span(_propagate.extract(delivery.headers)).get_span_context()
            if span_context.is_valid:
                links.append(_trace.Link(span_context, {"messaging.message.id": delivery.message_id}))
        with tracer.start_as_current_span(
            f"process {self.queue}",
            kind=_trace.SpanKind.CONSUMER,
            links=links,
            attributes={**messaging_attributes(self._messaging_system, self.queue, "process"),
                        "messaging.batch.message_count": len(items)},
        ):
            return await self._process_batch_untraced(items)

    async def _process_batch_untraced(
        self, items: list[tuple[str, dict[str, Any], Delivery, asyncio.Future]]
    ) -> list[bool | BaseException]:
        first_index: dict[str, int] = {}
        for index, (event_id, *_rest) in enumerate(items):
            first_index.setdefault(event_id, index)
        now = datetime.now(timezone.utc)
        async with self.db.transaction() as session:
            if self.db.is_postgres:
                # One statement text whatever the batch size (the ids as one array): PostgreSQL
                # prepares it once, where a VALUES list per size is prepared again and again.
                inserted = await session.execute(
                    _INBOX_FROM_ARRAY, {"queue": self.queue, "event_ids": list(first_index), "now": now}
                )
            else:
                # executemany parameters, not a VALUES list: the statement compiles once and stays cached.
                inserted = await session.execute(
                    self._insert_inbox(inbox_table).on_conflict_do_nothing().returning(inbox_table.c.event_id),
                    [{"queue": self.queue, "event_id": event_id, "handled_at": now} for event_id in first_index],
                )
            new_ids = set(inserted.scalars())
            fresh_indexes = [i for event_id, i in first_index.items() if event_id in new_ids]
            failed: dict[str, BaseException] = {}
            if fresh_indexes:
                failures = await self.batch_handler(session, [(items[i][1], items[i][2]) for i in fresh_indexes])
                for position, exc in (failures or {}).items():
                    failed[items[fresh_indexes[position]][0]] = exc
            if failed:  # not handled: their redelivery must find no inbox row
                await session.execute(
                    sa.delete(inbox_table).where(
                        inbox_table.c.queue == self.queue, inbox_table.c.event_id.in_(sorted(failed))
                    )
                )
        outcomes: list[bool | BaseException] = []
        for index, (event_id, *_rest) in enumerate(items):
            if first_index[event_id] != index:
                outcomes.append(False)  # a duplicate within the batch
            elif event_id in failed:
                outcomes.append(failed[event_id])
            else:
                outcomes.append(event_id in new_ids)
        return outcomes

    @property
    def _messaging_system(self) -> str:
        return getattr(self.broker, "messaging_system", "rabbitmq")

    def _process_attributes(self, delivery: Delivery, event_type: Any) -> dict[str, Any]:
        attributes = messaging_attributes(self._messaging_system, self.queue, "process",
                                          routing_key=delivery.routing_key, message_id=delivery.message_id)
        attributes["roomee.event.type"] = str(event_type)
        attributes["roomee.delivery.attempt"] = delivery.attempt
        return attributes

    def _tracer(self):
        """The tracer, looked up once (``get_tracer`` builds and compares an instrumentation scope on
        every call: a few percent of a busy consumer's time)."""
        if _trace is None:
            return None
        if self._tracer_value is None:
            self._tracer_value = _trace.get_tracer("roomee")
        return self._tracer_value

    def _count(self, routing_key: str, status: str) -> None:
        # Looked up once per (key, status): matching the bindings and the labels cost more than the
        # increment. Bounded, since anyone may publish any key.
        counter = self._counters.get((routing_key, status))
        if counter is None:
            # The label is the binding the key matched, not the incoming key.
            binding = next((b for b in self.bindings if topic_matches(b, routing_key)), "<unbound>")
            counter = metrics.amqp_messages_total.labels(self.service, binding, "consume", status)
            if len(self._counters) < _MAX_COUNTED_KEYS:
                self._counters[(routing_key, status)] = counter
        counter.inc()

