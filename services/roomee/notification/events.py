"""What the notification service consumes and emits.

Consumed: every ``roomee.notification.#`` event (queue ``notification_queue``), the seed's matrix:
``page.*``, ``comment.*``, ``like.*``, ``member.*``, ``workspace.*``, ``hotel.*``.

Emitted (to itself, through the outbox, in the transaction that stores the notification):
delivery jobs on ``roomee.delivery.push`` (queue ``notification_push_queue``) and
``roomee.delivery.email`` (queue ``notification_email_queue``). Each queue has the kit's retries
(1 s, 2 s, 4 s) and its dead-letter queue.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.events import Delivery
from roomee.kit.platform import ConsumerSpec, ServiceContext
from roomee.notification.delivery import DeliveryHandlers
from roomee.notification.dispatcher import EMAIL_JOBS, PUSH_JOBS
from roomee.notification.processor import NotificationProcessor

NOTIFICATION_QUEUE = "notification_queue"
PUSH_QUEUE = "notification_push_queue"
EMAIL_QUEUE = "notification_email_queue"
QUEUES = (NOTIFICATION_QUEUE, PUSH_QUEUE, EMAIL_QUEUE)
NOTIFICATION_EVENTS = "roomee.notification.#"
# Events handled in one transaction, and unacknowledged deliveries at once (a batch fills while the
# previous one commits).
NOTIFICATION_BATCH = 200
NOTIFICATION_PREFETCH = 400
DELIVERY_BATCH = 100
DELIVERY_PREFETCH = 200


def consumers(ctx: ServiceContext) -> list[ConsumerSpec]:
    processor = NotificationProcessor(ctx, ctx.state.get("factory"))
    deliveries = DeliveryHandlers(ctx)

    async def on_events(session: AsyncSession, items: list[tuple[dict[str, Any], Delivery]]) -> None:
        await processor.handle_batch(session, [envelope for envelope, _delivery in items])

    return [
        # Events that arrive together share one transaction (the kit retries a failed batch one
        # event at a time, so a poison event only holds back itself).
        ConsumerSpec(NOTIFICATION_QUEUE, [NOTIFICATION_EVENTS], batch_handler=on_events,
                     batch_size=NOTIFICATION_BATCH, prefetch=NOTIFICATION_PREFETCH),
        # Delivery jobs too: a batch holds one transaction (and connection) during its provider calls.
        ConsumerSpec(PUSH_QUEUE, [PUSH_JOBS], batch_handler=deliveries.push,
                     batch_size=DELIVERY_BATCH, prefetch=DELIVERY_PREFETCH),
        ConsumerSpec(EMAIL_QUEUE, [EMAIL_JOBS], batch_handler=deliveries.email,
                     batch_size=DELIVERY_BATCH, prefetch=DELIVERY_PREFETCH),
    ]
