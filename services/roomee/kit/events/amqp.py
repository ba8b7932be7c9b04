"""RabbitMQ broker (aio-pika, robust connection, publisher confirms).

Topology for a consuming queue ``Q`` (all durable):

- ``Q`` bound to the topic exchange with each binding key;
- ``Q.retry.1`` .. ``Q.retry.N`` with ``x-message-ttl`` = the retry delays and
  ``x-dead-letter-exchange: ""`` + ``x-dead-letter-routing-key: Q``, so an expired retry comes back
  to ``Q`` only (not to every queue bound to the original routing key);
- ``Q.dlq`` for messages whose last retry failed.

On a handler failure the message is republished (confirmed) to the next retry queue with
``x-retry-count`` and ``x-original-routing-key``, then the original is acked. The robust connection
re-declares channels, exchanges, queues, bindings and consumers after a broker restart; publishes
during an outage raise at once, so the outbox keeps the rows.

A cluster: ``url`` may name several nodes, comma-separated. Each connection attempt tries them in turn
from the one after the node last lost, so a reconnection lands on a surviving node. With
``queue_type="quorum"`` every queue is a replicated quorum queue (RabbitMQ 3.10+: message TTL and
at-least-once dead-lettering, which the retry queues need); a message redelivered
``QUORUM_DELIVERY_LIMIT`` times (a consumer that keeps dying on it) goes to ``Q.dlq``. RabbitMQ
refuses to change an existing queue's type: declaring one raises :class:`QueueTypeMismatch`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import aio_pika
import aiormq
from aio_pika.robust_connection import RobustConnection
from yarl import URL
from aiormq.abc import DeliveredMessage
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

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
from roomee.kit.events.envelope import format_timestamp, parse_timestamp

log = logging.getLogger("roomee.events")

# aiormq and aio-pika log a traceback for every failed reconnection attempt (a dozen or more per
# 10 s outage); the broker reports an outage itself: one WARNING on loss, one INFO on recovery.
for _noisy in ("aiormq", "aio_pika"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL)

# Connection and channel loss: expected during a broker outage (the relay retries quietly).
_UNAVAILABLE = (aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError)


# Quorum queues: deliveries of one message (redeliveries after a consumer or node loss count) before
# RabbitMQ dead-letters it to ``Q.dlq`` rather than handing it out again.
QUORUM_DELIVERY_LIMIT = 20


class QueueTypeMismatch(RuntimeError):
    """A queue exists with another type than ``ROOMEE_QUEUE_TYPE`` (RabbitMQ never changes a queue's type)."""


def broker_urls(url: str) -> list[str]:
    """The node URLs of ``ROOMEE_BROKER_URL`` (one URL, or several comma-separated)."""
    urls = [part.strip() for part in url.split(",") if part.strip()]
    if not urls:
        raise ValueError("ROOMEE_BROKER_URL names no broker")
    return urls


def retry_queue_name(queue: str, number: int) -> str:
    return f"{queue}.retry.{number}"


def dead_letter_queue_name(queue: str) -> str:
    return f"{queue}.dlq"


class AmqpBroker(Broker):
    def __init__(
        self,
        url: str,
        exchange: str = "roomee",
        *,
        retry_delays_ms: Iterable[int] = (1000, 2000, 4000),
        prefetch: int = 100,
        confirm_window: int = 500,
        reconnect_interval: float = 1.0,
        publish_timeout: float = 30.0,
        shutdown_grace_seconds: float = 10.0,
        queue_type: str = "classic",
    ) -> None:
        if queue_type not in ("classic", "quorum"):
            raise ValueError(f"queue_type must be 'classic' or 'quorum', not {queue_type!r}")
        self.url = url
        self.urls = broker_urls(url)
        self.queue_type = queue_type
        self.exchange = exchange
        self.retry_delays = tuple(ms / 1000 for ms in retry_delays_ms)
        self.prefetch = prefetch
        self.confirm_window = confirm_window
        self.reconnect_interval = reconnect_interval
        self.publish_timeout = publish_timeout
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.declared_queues: set[str] = set()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._subscriptions: set[_AmqpSubscription] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._connection is not None:
            return
        self._connection = await aio_pika.connect_robust(
            self.urls[0],
            reconnect_interval=self.reconnect_interval,
            client_properties={"connection_name": f"roomee:{self.exchange}"},
            connection_class=functools.partial(_FailoverConnection, urls=self.urls),
        )
        self._connection.close_callbacks.add(self._on_connection_lost)
        self._connection.reconnect_callbacks.add(self._on_reconnected)
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._declare_exchange(self._channel)
        log.info("amqp broker connected", extra={"exchange": self.exchange})

    def _on_connection_lost(self, _connection: Any, exc: BaseException | None) -> None:
        if self._connection is None:
            return  # closed on purpose
        log.warning(
            "amqp broker connection lost (%s); events wait in the outbox, reconnecting every %.0f s",
            f"{type(exc).__name__}: {exc}" if exc else "closed", self.reconnect_interval,
            extra={"exchange": self.exchange},
        )

    def _on_reconnected(self, _connection: Any) -> None:
        log.info("amqp broker connection restored", extra={"exchange": self.exchange})

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.cancel()
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None:
            await connection.close()

    async def ping(self) -> None:
        connection = self._connection
        if connection is None or connection.is_closed:
            raise BrokerUnavailable("AMQP broker not started")
        if not connection.connected.is_set():
            raise BrokerUnavailable("AMQP connection lost; reconnecting")
        if self._channel is None or self._channel.is_closed:
            raise BrokerUnavailable("AMQP publishing channel closed; reopening")

    def _require_connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BrokerUnavailable("AMQP broker not started")
        return self._connection

    async def _declare_exchange(self, channel: AbstractChannel) -> AbstractExchange:
        return await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)

    # -- publishing --------------------------------------------------------------------------

    async def publish_batch(self, messages: Sequence[Message]) -> list[Message]:
        if not messages:
            return []
        channel = self._channel
        if self._exchange is None or channel is None:
            raise BrokerUnavailable("AMQP broker not started")
        # During an outage fail at once, as aio-pika's publish does: the outbox keeps the rows and
        # the relay backs off, rather than holding its transaction open until the broker is back.
        await self.ping()
        try:
            # Bounded: a channel still being restored right after a reconnection.
            underlay = await asyncio.wait_for(channel.get_underlay_channel(), self.publish_timeout)
        except asyncio.TimeoutError as exc:
            raise BrokerUnavailable(f"no AMQP channel within {self.publish_timeout} s") from exc
        except _UNAVAILABLE as exc:
            raise BrokerUnavailable(f"publish failed: {type(exc).__name__}: {exc}") from exc
        unroutable: list[Message] = []
        for start in range(0, len(messages), self.confirm_window):
            window = messages[start : start + self.confirm_window]
            try:
                # Pipelined: aiormq's publish with ``wait=False`` queues the frames without waiting
                # for each to be written, and the confirms of a whole window are awaited together
                # (aio-pika's ``Exchange.publish`` waits for every write). The timeout also bounds a
                # connection lost mid-window.
                results = await asyncio.wait_for(
                    asyncio.gather(
                        *(
                            underlay.basic_publish(
                                m.body,
                                exchange=self.exchange,
                                routing_key=m.routing_key,
                                properties=_properties(m.headers, m.message_id),
                                mandatory=m.mandatory,
                                wait=False,
                            )
                            for m in window
                        ),
                        return_exceptions=True,
                    ),
                    self.publish_timeout,
                )
            except asyncio.TimeoutError as exc:
                raise BrokerUnavailable(f"no publisher confirm within {self.publish_timeout} s") from exc
            for message, result in zip(window, results):
                if isinstance(result, _UNAVAILABLE):
                    raise BrokerUnavailable(f"publish failed: {type(result).__name__}: {result}") from result
                if isinstance(result, BaseException):
                    raise result
                if isinstance(result, DeliveredMessage):
                    # basic.return before the confirm: no queue is bound to the routing key.
                    unroutable.append(message)
        return unroutable

    # -- topology ----------------------------------------------------------------------------

    async def declare_queue(self, queue: str, bindings: Iterable[str]) -> None:
        channel = await self._require_connection().channel()
        try:
            await self._declare_topology(channel, queue, bindings)
        finally:
            await channel.close()

    async def _declare_topology(
        self, channel: AbstractChannel, queue: str, bindings: Iterable[str]
    ) -> AbstractQueue:
        exchange = await self._declare_exchange(channel)
        main = await self._declare(channel, queue, self._main_arguments(queue))
        for binding in bindings:
            await main.bind(exchange, binding)
        for number, delay in enumerate(self.retry_delays, start=1):
            await self._declare(
                channel,
                retry_queue_name(queue, number),
                {
                    "x-message-ttl": int(round(delay * 1000)),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": queue,
                },
            )
        await self._declare(channel, dead_letter_queue_name(queue))
        self.declared_queues.add(queue)
        return main

    def _main_arguments(self, queue: str) -> dict[str, Any]:
        if self.queue_type != "quorum":
            return {}
        return {
            "x-delivery-limit": QUORUM_DELIVERY_LIMIT,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_letter_queue_name(queue),
        }

    async def _declare(
        self, channel: AbstractChannel, name: str, arguments: dict[str, Any] | None = None
    ) -> AbstractQueue:
        """Declare a durable queue of ``queue_type``; a queue of the other type is refused by RabbitMQ
        (PRECONDITION_FAILED), said as :class:`QueueTypeMismatch`."""
        arguments = dict(arguments or {})
        if self.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
            if "x-dead-letter-exchange" in arguments:
                # At-least-once dead-lettering (3.10+): an expired retry or an over-delivered message is
                # not lost when a node fails mid-way (the default for quorum queues is at-most-once).
                arguments.update({"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
        try:
            return await channel.declare_queue(name, durable=True, arguments=arguments or None)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise QueueTypeMismatch(
                f"queue {name!r} exists with other arguments than a {self.queue_type} queue ({exc}); RabbitMQ does "
                f"not change a queue's type: set ROOMEE_QUEUE_TYPE to the type the queues have, or drain and "
                f"delete them (roomee migrate declares them anew)"
            ) from exc

    async def dead_letter_counts(self, queues: Iterable[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        connection = self._require_connection()
        channel = await connection.channel()
        try:
            for queue in queues:
                try:
                    # Passive: reads the depth without creating a queue that does not exist.
                    declared = await channel.declare_queue(dead_letter_queue_name(queue), passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    # A 404 closes the channel (a robust one would reopen itself): take a new one.
                    await _close_quietly(channel)
                    channel = await connection.channel()
                    continue
                counts[queue] = declared.declaration_result.message_count or 0
        finally:
            await _close_quietly(channel)
        return counts

    async def delete_queue(self, queue: str) -> None:
        channel = await self._require_connection().channel()
        try:
            names = [queue, dead_letter_queue_name(queue)]
            names += [retry_queue_name(queue, n) for n in range(1, len(self.retry_delays) + 1)]
            for name in names:
                await channel.queue_delete(name)
        finally:
            await channel.close()
        self.declared_queues.discard(queue)

    async def delete_exchange(self) -> None:
        channel = await self._require_connection().channel()
        try:
            await channel.exchange_delete(self.exchange)
        finally:
            await channel.close()

    # -- consuming ---------------------------------------------------------------------------

    async def consume(
        self,
        queue: str,
        bindings: list[str],
        handler: Handler,
        prefetch: int | None = None,
    ) -> Subscription:
        # on_return_raises: a retry/dead-letter publish to a missing queue must fail, not vanish.
        channel = await self._require_connection().channel(publisher_confirms=True, on_return_raises=True)
        await channel.set_qos(prefetch_count=prefetch or self.prefetch)
        main = await self._declare_topology(channel, queue, bindings)
        subscription = _AmqpSubscription(self, channel, main, queue, handler)
        await subscription.start()
        self._subscriptions.add(subscription)
        return subscription

    # -- dead letters ------------------------------------------------------------------------

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        channel = await self._require_connection().channel()
        letters: list[DeadLetter] = []
        try:
            dlq = await self._declare(channel, dead_letter_queue_name(queue))
            while len(letters) < limit:
                message = await dlq.get(no_ack=False, fail=False)
                if message is None:
                    break
                letters.append(_dead_letter(queue, message))
        finally:
            # Closing the channel returns every fetched (unacked) message to the DLQ, in place.
            await channel.close()
        return letters

    async def replay_dead_letters(self, queue: str, ids: list[str] | None = None) -> int:
        wanted = set(ids) if ids is not None else None
        channel = await self._require_connection().channel(publisher_confirms=True, on_return_raises=True)
        replayed = 0
        try:
            dlq = await self._declare(channel, dead_letter_queue_name(queue))
            # Only what waits now: a replayed event that fails again at once is dead-lettered anew behind
            # these, and taking it again would loop for as long as it keeps failing.
            for _ in range(dlq.declaration_result.message_count):
                message = await dlq.get(no_ack=False, fail=False)
                if message is None:
                    break
                if wanted is not None and (message.message_id or "") not in wanted:
                    continue  # stays unacked until the channel closes, then back in the DLQ
                headers = without_broker_headers(dict(message.headers or {}))
                headers.setdefault(ORIGINAL_ROUTING_KEY_HEADER, message.routing_key or queue)
                await channel.default_exchange.publish(
                    _amqp_message(message.body, headers, message.message_id),
                    queue,
                    timeout=self.publish_timeout,
                )
                await message.ack()
                replayed += 1
        finally:
            await channel.close()
        if replayed:
            log.info("replayed dead letters", extra={"queue": queue, "count": replayed})
        return replayed


class _FailoverConnection(RobustConnection):
    """A robust connection over several nodes: each (re)connection attempt tries every URL in turn,
    from the one after the node whose connection was lost, and keeps the first that answers."""

    def __init__(self, url: URL, *args: Any, urls: Sequence[str], **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        self._urls = [URL(u) for u in urls]
        self._node = 0

    async def _on_connection_close(self, closing: asyncio.Future) -> None:
        if not self._close_called:
            self._node = (self._node + 1) % len(self._urls)  # that node may be gone: start at the next
        await super()._on_connection_close(closing)

    # aio-pika's RobustConnection makes each attempt through this (name-mangled) method.
    async def _RobustConnection__connect_transport(self) -> None:
        failure: BaseException | None = None
        first = self._node
        for step in range(len(self._urls)):
            node = (first + step) % len(self._urls)
            self.url = self._urls[node]
            try:
                await super()._RobustConnection__connect_transport()
            except Exception as exc:  # refused, reset, timed out, or its channels could not be restored
                failure = exc
                continue
            self._node = node
            return
        assert failure is not None
        raise failure


class _AmqpSubscription(Subscription):
    """Consumes through aiormq directly: aio-pika would build an ``IncomingMessage`` and start a
    second task for every delivery (a fifth of the consumer's CPU at a few thousand messages/s).
    The robust channel still restores the topology and QoS after a reconnection; the consumer is
    registered again on the new channel by ``reopen_callbacks``."""

    def __init__(
        self,
        broker: AmqpBroker,
        channel: AbstractChannel,
        queue: AbstractQueue,
        name: str,
        handler: Handler,
    ) -> None:
        self.broker = broker
        self.channel = channel
        self.queue = queue
        self.name = name
        self.handler = handler
        self._tag = f"roomee.{name}.{uuid.uuid4().hex}"
        self._underlay: aiormq.abc.AbstractChannel | None = None
        self._cancelled = False
        self._inflight: set[asyncio.Task] = set()
        self._acks: _AckWindow | None = None

    async def start(self) -> None:
        await self._subscribe()
        self.channel.reopen_callbacks.add(self._on_reopen)

    async def _subscribe(self) -> None:
        underlay = await self.channel.get_underlay_channel()
        await underlay.basic_consume(self.name, self._on_message, no_ack=False, consumer_tag=self._tag)
        self._underlay = underlay

    async def _on_reopen(self, _channel: Any) -> None:
        if self._cancelled:
            return
        try:
            await self._subscribe()
        except Exception:
            # aio-pika gathers reopen callbacks quietly: say it, and let the next reconnection retry.
            log.warning("could not resume consuming after a reconnection", extra={"queue": self.name}, exc_info=True)

    async def cancel(self) -> None:
        self._cancelled = True
        self.broker._subscriptions.discard(self)
        self.channel.reopen_callbacks.discard(self._on_reopen)
        underlay, self._underlay = self._underlay, None
        if underlay is not None and not underlay.is_closed:
            try:
                await underlay.basic_cancel(self._tag)
            except Exception:
                log.warning("could not cancel consumer", extra={"queue": self.name}, exc_info=True)
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=self.broker.shutdown_grace_seconds)
            for task in pending:
                task.cancel()
        if self._acks is not None:
            self._acks.flush()  # the acks of what was handled, before the channel closes
            await asyncio.sleep(0)
        # Closing returns any unacked message to the queue.
        if not self.channel.is_closed:
            await self.channel.close()

    async def _on_message(self, message: DeliveredMessage) -> None:
        # aiormq runs each delivery in a task of its own.
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self._handle(message)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _handle(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        headers = dict(properties.headers or {})
        retry_count = _int(headers.get(RETRY_COUNT_HEADER))
        delivery = Delivery(
            routing_key=str(headers.get(ORIGINAL_ROUTING_KEY_HEADER) or message.delivery.routing_key or ""),
            body=message.body,
            headers=headers,
            message_id=properties.message_id or "",
            attempt=retry_count + 1,
            queue=self.name,
        )
        try:
            await self.handler(delivery)
        except asyncio.CancelledError:
            # Shutdown: leave the message unacked; closing the channel requeues it.
            raise
        except Exception as exc:
            await self._failed(message, delivery, retry_count, exc)
            return
        self._ack(message)

    def _ack(self, message: DeliveredMessage) -> None:
        """Acknowledge ``message`` with those settled beside it: one ``multiple`` ack per run of consecutive
        delivery tags (a batch) instead of a frame per message."""
        window = self._acks
        if window is None or window.channel is not message.channel:
            window = self._acks = _AckWindow(message.channel, self.name)  # a new channel numbers from 1 again
        window.ack(message.delivery.delivery_tag)

    async def _failed(self, message: DeliveredMessage, delivery: Delivery, retry_count: int, exc: Exception) -> None:
        headers = without_broker_headers(delivery.headers)
        headers[ORIGINAL_ROUTING_KEY_HEADER] = delivery.routing_key
        if retry_count < len(self.broker.retry_delays) and not isinstance(exc, PermanentFailure):
            headers[RETRY_COUNT_HEADER] = retry_count + 1
            target = retry_queue_name(self.name, retry_count + 1)
        else:
            headers[RETRY_COUNT_HEADER] = retry_count
            headers[ERROR_HEADER] = f"{type(exc).__name__}: {exc}"[:2000]
            headers[DEAD_AT_HEADER] = format_timestamp()
            target = dead_letter_queue_name(self.name)
        try:
            await self.channel.default_exchange.publish(
                _amqp_message(message.body, headers, delivery.message_id or None),
                target,
                timeout=self.broker.publish_timeout,
            )
        except Exception:
            # Could not park it: hand it back to the queue rather than lose it.
            log.warning("could not move failed message", extra={"queue": self.name, "target": target}, exc_info=True)
            if self._acks is not None and self._acks.channel is message.channel:
                self._acks.settled_alone(message.delivery.delivery_tag)
            await _settle(message.channel.basic_nack(message.delivery.delivery_tag, requeue=True), self.name)
            return
        self._ack(message)


class _AckWindow:
    """The acks of one channel, sent together. Delivery tags of a channel are consecutive from 1; a tag
    settled with every tag below it is acknowledged by one ``basic.ack(multiple)`` sent once the deliveries
    woken together have settled (the next turn of the loop). A tag settled while an earlier one is still
    being handled is acknowledged alone, as before, so a slow delivery never holds the others' acks back
    (nor the prefetch window)."""

    def __init__(self, channel, queue: str) -> None:
        self.channel = channel
        self.queue = queue
        self.mark = 0  # every tag up to here is settled
        self.top = 0  # the highest tag up to the mark whose ack is still to send (0: none)
        self.sent = 0  # the highest tag acknowledged with multiple
        self.waiting: dict[int, bool] = {}  # tags settled above the mark: True while their ack is to send
        self.scheduled = False

    def ack(self, tag: int) -> None:
        self.waiting[tag] = True
        self._advance()
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def settled_alone(self, tag: int) -> None:
        """A tag settled on the wire by itself (a nack): it no longer holds the mark back."""
        self.waiting[tag] = False
        self._advance()

    def _advance(self) -> None:
        while self.mark + 1 in self.waiting:
            self.mark += 1
            if self.waiting.pop(self.mark):
                self.top = self.mark

    def flush(self) -> None:
        self.scheduled = False
        if self.channel.is_closed:
            self.waiting.clear()  # the broker redelivers what was not acknowledged
            return
        # The multiple ack names a tag still unacknowledged (the broker refuses one already settled alone).
        if self.top > self.sent:
            self.sent = self.top
            _send(self.channel.basic_ack(self.top, multiple=True, wait=False), self.queue)
        for tag, unsent in self.waiting.items():
            if unsent:
                self.waiting[tag] = False
                _send(self.channel.basic_ack(tag, wait=False), self.queue)


def _send(operation, queue: str) -> None:
    """Run an ack (it queues its frame at its first step) without waiting for it."""
    task = asyncio.ensure_future(_settle(operation, queue))
    _SENDING.add(task)
    task.add_done_callback(_SENDING.discard)


_SENDING: set[asyncio.Task] = set()


async def _close_quietly(channel: AbstractChannel) -> None:
    try:
        if not channel.is_closed:
            await channel.close()
    except Exception:
        log.debug("could not close a channel", exc_info=True)


async def _settle(operation, queue: str) -> None:
    try:
        await operation
    except Exception:
        # The channel went away: the broker redelivers the message (the inbox makes that harmless).
        log.warning("could not settle message", extra={"queue": queue}, exc_info=True)


def _properties(headers: dict[str, Any], message_id: str) -> aiormq.spec.Basic.Properties:
    # What ``_amqp_message`` sets, without building an aio-pika Message first.
    return aiormq.spec.Basic.Properties(
        headers=headers,
        message_id=message_id,
        content_type="application/json",
        delivery_mode=int(aio_pika.DeliveryMode.PERSISTENT),
    )


def _amqp_message(body: bytes, headers: dict[str, Any], message_id: str | None) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        headers=headers,
        message_id=message_id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _dead_letter(queue: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers or {})
    dead_at = headers.get(DEAD_AT_HEADER)
    try:
        dead_at_value = parse_timestamp(dead_at) if isinstance(dead_at, (str, datetime)) else None
    except ValueError:
        dead_at_value = None
    error = headers.get(ERROR_HEADER)
    return DeadLetter(
        id=message.message_id or "",
        queue=queue,
        routing_key=str(headers.get(ORIGINAL_ROUTING_KEY_HEADER) or message.routing_key or ""),
        body=message.body,
        headers=headers,
        error=str(error) if error is not None else None,
        attempts=_int(headers.get(RETRY_COUNT_HEADER)) + 1,
        dead_at=dead_at_value.astimezone(timezone.utc) if dead_at_value else None,
    )
