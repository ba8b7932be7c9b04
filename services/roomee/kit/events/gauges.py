"""The event path's gauges of what waits (ARCHITECTURE §7: outbox backlog, dead letters).

They live beside the code that samples them; labels are bounded by the platform's code: the
target, a routing-key family (its first three words, e.g. ``roomee.notification.member``) and the
queues the targets declare.
"""

from __future__ import annotations

from prometheus_client import Gauge

outbox_unroutable_events = Gauge(
    "outbox_unroutable_events",
    "Committed events kept in the outbox because no queue is bound to their routing key (retried with backoff).",
    ["service", "family"],
)
dead_letters_waiting = Gauge(
    "dead_letters_waiting",
    "Messages in each consumer queue's dead-letter queue (sampled every few seconds).",
    ["service", "queue"],
)


def routing_key_family(routing_key: str) -> str:
    """The label for a routing key: its first three words (service, then entity)."""
    return ".".join(routing_key.split(".")[:3])
