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
