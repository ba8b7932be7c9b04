"""One broker interface, two backends: RabbitMQ (:class:`AmqpBroker`) and the embedded durable bus
(:class:`EmbeddedBroker`). :func:`broker_from_settings` picks one (``broker_url`` set → RabbitMQ).

Semantics shared by both backends:

- ``publish_batch`` returns once every message is durable (publisher confirms / a committed
  SQLite transaction) and raises if any of them is not; callers (the outbox relay) keep the rows.
  A ``mandatory`` message that no queue is bound to is not dropped silently: it is returned
  (RabbitMQ's ``basic.return``; the embedded bus finds no binding) in the list ``publish_batch``
  answers, and the outbox keeps its row until a queue bound to it appears.
- A queue is bound to the topic exchange ``settings.exchange`` with AMQP topic binding keys.
- ``consume`` runs the handler for each delivery, at most ``prefetch`` at a time. Returning acks
  the message. Raising schedules a retry after 1 s, 2 s then 4 s (``settings.retry_delays_ms``); when
  the last retry fails too the message goes to the queue's dead-letter store, from where
  ``replay_dead_letters`` moves it back with its retry count reset. A handler raising
  :class:`PermanentFailure` skips the retries.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic_core import from_json

if TYPE_CHECKING:
    from roomee.kit.settings import Settings

# Headers the brokers set on retried and dead-lettered messages.
RETRY_COUNT_HEADER = "x-retry-count"
ORIGINAL_ROUTING_KEY_HEADER = "x-original-routing-key"
ERROR_HEADER = "x-error"
DEAD_AT_HEADER = "x-dead-at"
_BROKER_HEADERS = (RETRY_COUNT_HEADER, ERROR_HEADER, DEAD_AT_HEADER)


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached (or was not started)."""


class PermanentFailure(Exception):
    """Raised by a handler for a message that can never succeed: dead-lettered without retries."""


@dataclass(frozen=True)
class Message:
    """One message to publish on the topic exchange."""

    routing_key: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # Published with AMQP ``mandatory``: a message no queue is bound to comes back as unroutable.
    # False only for a broadcast that may have no consumer by design.
    mandatory: bool = True


@dataclass
class Delivery:
    """One message handed to a consumer's handler."""

    routing_key: str
    body: bytes
    headers: dict[str, Any]
    message_id: str
    attempt: int  # 1 for the first delivery, 2 for the first retry, ...
    queue: str = ""

    @cached_property
    def envelope(self) -> dict[str, Any]:
        """The body parsed as JSON (the event envelope); pydantic-core's parser, a third of ``json.loads``'s
        time on an envelope (same values, a ValueError for what is not JSON)."""
        return from_json(self.body)


@dataclass(frozen=True)
class DeadLetter:
    """A message that exhausted its retries; ``id`` is what ``replay_dead_letters`` takes."""

    id: str
    queue: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    error: str | None
    attempts: int
    dead_at: datetime | None


Handler = Callable[[Delivery], Awaitable[None]]


class Subscription(ABC):
    """A running consumer; ``cancel`` stops taking messages and waits for in-flight handlers."""

    @abstractmethod
    async def cancel(self) -> None: ...


class Broker(ABC):
    """The interface the outbox relay, the consumers and ``/health/ready`` use."""

    exchange: str
    retry_delays: tuple[float, ...]  # seconds
    prefetch: int
    # ``messaging.system`` of its spans (OpenTelemetry messaging conventions).
    messaging_system: str = "rabbitmq"

    @property
    def max_attempts(self) -> int:
        """Deliveries of one message before it is dead-lettered (first try + retries)."""
        return len(self.retry_delays) + 1

    @abstractmethod
    async def start(self) -> None:
        """Connect (or open the bus file); must be called before anything else."""

    @abstractmethod
    async def close(self) -> None:
        """Stop every subscription and release the connection."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise :class:`BrokerUnavailable` unless the broker is usable right now."""

    @abstractmethod
    async def publish_batch(self, messages: Sequence[Message]) -> list[Message]:
        """Publish every message durably; raise if any could not be confirmed. Answer the
        ``mandatory`` messages that no queue is bound to (not stored anywhere by the broker)."""

    @abstractmethod
    async def declare_queue(self, queue: str, bindings: Iterable[str]) -> None:
        """Create a durable queue (with its retry and dead-letter parts) and bind it."""

    @abstractmethod
    async def consume(
        self,
        queue: str,
        bindings: list[str],
        handler: Handler,
        prefetch: int | None = None,
    ) -> Subscription:
        """Declare the queue and run ``handler`` for its messages until cancelled."""

    @abstractmethod
    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead-lettered messages of a queue, left in place."""

    @abstractmethod
    async def replay_dead_letters(self, queue: str, ids: list[str] | None = None) -> int:
        """Move dead letters (all, or those whose id is listed) back to the queue; return how many."""

    @abstractmethod
    async def dead_letter_counts(self, queues: Iterable[str]) -> dict[str, int]:
        """How many dead letters wait in each queue's dead-letter store (cheap: no message is read);
        a queue that does not exist is left out."""

    @abstractmethod
    async def delete_queue(self, queue: str) -> None:
        """Delete a queue with its bindings, retry parts and dead letters."""


def without_broker_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """Headers with the retry/dead-letter bookkeeping (and RabbitMQ's x-death) removed."""
    return {
        key: value
        for key, value in headers.items()
        if key not in _BROKER_HEADERS
        and not key.startswith(("x-death", "x-first-death", "x-last-death"))
    }


def broker_from_settings(settings: Settings) -> Broker:
    """RabbitMQ when ``settings.broker_url`` is set (one node or several, comma-separated; queues of
    ``settings.queue_type``), otherwise the embedded bus in ``data_dir/bus.db``."""
    if settings.broker_url:
        from roomee.kit.events.amqp import AmqpBroker

        return AmqpBroker(
            settings.broker_url,
            settings.exchange,
            retry_delays_ms=settings.retry_delays_ms,
            prefetch=settings.consumer_prefetch,
            queue_type=settings.queue_type,
        )
    from roomee.kit.events.embedded import EmbeddedBroker

    return EmbeddedBroker(
        settings.data_dir / "bus.db",
        settings.exchange,
        retry_delays_ms=settings.retry_delays_ms,
        prefetch=settings.consumer_prefetch,
    )


def messaging_attributes(system: str, destination: str, operation: str, *, routing_key: str | None = None,
                         message_id: str | None = None) -> dict[str, Any]:
    """The OpenTelemetry messaging attributes of a publish (``send``) or consume (``process``) span:
    ``destination`` is the exchange published to or the queue consumed."""
    attributes: dict[str, Any] = {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.operation.type": operation,
        "messaging.operation.name": "publish" if operation == "send" else operation,
    }
    if routing_key is not None:
        attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
    if message_id is not None:
        attributes["messaging.message.id"] = message_id
    return attributes
