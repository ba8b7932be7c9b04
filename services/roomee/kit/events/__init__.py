"""Events: the seed's envelope, a transactional outbox, idempotent consumers, two brokers.

Emitting (inside the request's or consumer's transaction)::

    from roomee.kit.events import build_envelope, emit

    async with db.transaction() as session:
        page = await repository.create_page(session, ...)
        await emit(session, "roomee.notification.page.created", build_envelope(
            "page.created", workspace_id=ws.id, hotel_id=ws.hotel_id, workspace_name=ws.name,
            payload={"id": page.id, "title": page.title}, actor={"id": m.id, "name": m.name, "type": "member"},
            receiver_ids=receivers))

The row is committed with the change; the service's ``OutboxRelay`` is woken by the commit and
publishes it (confirmed) to the topic exchange ``settings.exchange``. A broker outage delays
events, never loses them.

Consuming::

    async def on_event(session: AsyncSession, envelope: dict, delivery: Delivery) -> None:
        ...  # runs in one transaction with the inbox row; may emit(session, ...)

    EventConsumer(db, broker, "notification", "notification_queue", ["roomee.notification.#"], on_event)

A handler that raises is retried after 1 s, 2 s, 4 s, then dead-lettered (``broker.dead_letters``,
``broker.replay_dead_letters``); raise ``PermanentFailure`` to dead-letter at once. An event id
already in the inbox for that queue is skipped.

Wiring: ``roomee.kit.platform.Platform`` starts one broker per process, declares every target's
queues, then starts each service database's relay and its consumers (and stops them in reverse).

The outbox/inbox tables come with ``roomee.kit.db.new_metadata()`` (``add_event_tables``).
"""

from roomee.kit.events.broker import (
    Broker,
    BrokerUnavailable,
    DeadLetter,
    Delivery,
    Message,
    PermanentFailure,
    Subscription,
    broker_from_settings,
)
from roomee.kit.events.consumer import EventConsumer, EventHandler
from roomee.kit.events.envelope import Envelope, build_envelope, format_timestamp
from roomee.kit.events.outbox import OutboxRelay, emit, emit_many
from roomee.kit.events.tables import add_event_tables
from roomee.kit.events.topic import topic_matches

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "EventConsumer",
    "EventHandler",
    "Message",
    "OutboxRelay",
    "PermanentFailure",
    "Subscription",
    "add_event_tables",
    "broker_from_settings",
    "build_envelope",
    "emit",
    "emit_many",
    "format_timestamp",
    "topic_matches",
]
