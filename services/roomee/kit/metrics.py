"""The platform's Prometheus metrics (ARCHITECTURE §7). Every service records into these."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

http_request_duration_seconds = Histogram(
    "http_request_duration_seconds",
    "Server-side HTTP request duration.",
    ["service", "endpoint", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
http_client_request_duration_seconds = Histogram(
    "http_client_request_duration_seconds",
    "Inter-service HTTP call duration, seen by the caller.",
    ["service", "target", "endpoint", "status"],
    buckets=LATENCY_BUCKETS,
)
amqp_messages_total = Counter(
    "amqp_messages_total",
    "Messages published and consumed.",
    ["service", "routing_key", "direction", "status"],
)
notifications_sent_total = Counter(
    "notifications_sent_total",
    "Notification deliveries by channel and outcome.",
    ["channel", "status"],
)
circuit_breaker_state = Gauge(
    "circuit_breaker_state",
    "Circuit breaker state per caller and target: 0 closed, 1 half-open, 2 open.",
    ["service", "target"],
)
broker_connected = Gauge(
    "broker_connected",
    "1 while this process reaches the broker; 0 during an outage (events wait in the outbox).",
    ["service"],
)
outbox_backlog = Gauge(
    "outbox_backlog",
    "Committed events not yet published.",
    ["service"],
)
consumer_lag_seconds = Histogram(
    "consumer_lag_seconds",
    "Time from an event's creation to its handling.",
    ["service", "queue"],
    buckets=LATENCY_BUCKETS,
)
saga_steps_total = Counter(
    "saga_steps_total",
    "Saga step outcomes.",
    ["saga", "step", "outcome"],
)
saga_step_duration_seconds = Histogram(
    "saga_step_duration_seconds",
    "Duration of one saga step attempt (or compensation), by outcome.",
    ["saga", "step", "outcome"],
    buckets=LATENCY_BUCKETS,
)
sagas_in_flight = Gauge(
    "sagas_in_flight",
    "Sagas started and not yet finished (running or compensating), as stored in the service's database.",
    ["saga"],
)
sagas_failed_total = Counter(
    "sagas_failed_total",
    "Sagas that failed and were compensated.",
    ["saga"],
)

# -- series at 0 from start-up ----------------------------------------------------------------------
# A labelled counter exports a series only once a label set is used; `increase()` over a series that
# appears at 1 is 0, so the first event would go unseen (no first-failure alert, "No data" panels).
# Every label value known in advance is therefore created at 0 when a target starts.

# The routing keys each target publishes (ARCHITECTURE §5: the seed's matrix).
PUBLISHED_ROUTING_KEYS: dict[str, tuple[str, ...]] = {
    "auth": ("roomee.auth.user.created", "roomee.auth.user.deleted", "roomee.notification.member.registered"),
    "members": tuple(f"roomee.notification.member.{a}" for a in ("onboarding", "registered", "created", "updated", "deleted"))
    + tuple(f"roomee.notification.workspace.{a}" for a in ("created", "updated", "deleted")),
    "hotel": tuple(f"roomee.notification.hotel.{a}" for a in ("created", "updated", "deleted", "creation_failed"))
    + ("roomee.storage.media",),
    "billing": ("roomee.notification.hotel.updated", "roomee.storage.media"),
    "news": tuple(f"roomee.notification.{entity}.{action}" for entity, actions in (
        ("page", ("created", "updated", "deleted")), ("comment", ("created", "updated", "deleted")),
        ("like", ("created", "deleted")),
    ) for action in actions),
}
PUBLISH_STATUSES = ("ok", "error", "unroutable")
CONSUME_STATUSES = ("ok", "retry", "dead", "duplicate")
# notifications_sent_total: the notification target's channels and delivery outcomes.
NOTIFYING_TARGET = "notification"
NOTIFICATION_CHANNELS = ("socket", "push", "email")
NOTIFICATION_STATUSES = ("sent", "failed", "deferred", "logged")


def initialise_target_series(service: str, consumed_bindings: list[str]) -> None:
    """Create at 0 the event-path series of one target: what it publishes (each status), what its
    consumers bind (each status), its unroutable-event families and, for the notification target,
    every channel and delivery status."""
    # Imported here: the events package imports this module.
    from roomee.kit.events.gauges import outbox_unroutable_events, routing_key_family

    published = PUBLISHED_ROUTING_KEYS.get(service, ())
    for routing_key in published:
        for status in PUBLISH_STATUSES:
            amqp_messages_total.labels(service, routing_key, "publish", status)
    for family in {routing_key_family(key) for key in published}:
        outbox_unroutable_events.labels(service, family).set(0)
    for binding in consumed_bindings:
        for status in CONSUME_STATUSES:
            amqp_messages_total.labels(service, binding, "consume", status)
    if service == NOTIFYING_TARGET:
        for channel in NOTIFICATION_CHANNELS:
            for status in NOTIFICATION_STATUSES:
                notifications_sent_total.labels(channel, status)
