"""Every labelled counter exists at 0 from start-up for its known label values (ARCHITECTURE §7), so
``increase()`` sees the first event (a series born at 1 has no increase: the first failed saga of a
pod would never fire RoomeeSagaFailed). Checked on a freshly started ``roomee run --target all`` process, before
anything happened in it: a subprocess, since this test process's counters have counted other tests."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from roomee.kit.metrics import (
    CONSUME_STATUSES,
    NOTIFICATION_CHANNELS,
    NOTIFICATION_STATUSES,
    PUBLISH_STATUSES,
    PUBLISHED_ROUTING_KEYS,
)
from tests.kit.served import served


def _fresh_metrics(tmp_path) -> dict[tuple[str, frozenset], float]:
    # `run --target all` (served's default), not `up`: `up` provisions its demo hotel at once, and its
    # subscription would count.
    with served(tmp_path, log_level="WARNING") as running:
        text = httpx.get(f"{running.url}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_labelled_counters_exist_at_zero_before_any_event(tmp_path):
    samples = _fresh_metrics(tmp_path)

    # The saga's failure counter and every step outcome of both hotel sagas.
    for saga in ("hotel-provisioning", "hotel-deletion"):
        assert _value(samples, "sagas_failed_total", saga=saga) is not None, saga
    assert _value(samples, "sagas_failed_total", saga="hotel-provisioning") == 0
    assert _value(samples, "saga_steps_total", saga="hotel-provisioning", step="subscription", outcome="failed") == 0
    assert _value(samples, "saga_steps_total", saga="hotel-deletion", step="announce", outcome="retry") == 0

    # The event path: every routing key each target publishes, every binding each consumer holds.
    missing = [
        (service, key, status)
        for service, keys in PUBLISHED_ROUTING_KEYS.items()
        for key in keys
        for status in PUBLISH_STATUSES
        if _value(samples, "amqp_messages_total", service=service, routing_key=key, direction="publish", status=status)
        is None
    ]
    assert missing == []
    for service, binding in (("notification", "roomee.notification.#"), ("media", "roomee.storage.media")):
        for status in CONSUME_STATUSES:
            assert _value(samples, "amqp_messages_total", service=service, routing_key=binding, direction="consume",
                          status=status) is not None, (service, binding, status)
    assert _value(samples, "outbox_unroutable_events", service="hotel", family="roomee.notification.hotel") == 0
    assert _value(samples, "outbox_unroutable_events", service="news", family="roomee.notification.page") == 0

    # Notification delivery by channel and status; billing's operations.
    for channel in NOTIFICATION_CHANNELS:
        for status in NOTIFICATION_STATUSES:
            assert _value(samples, "notifications_sent_total", channel=channel, status=status) is not None
    assert _value(samples, "billing_subscriptions_total", operation="assign", outcome="created") == 0
    assert _value(samples, "billing_subscriptions_total", operation="close", outcome="closed") == 0
    assert _value(samples, "billing_webhook_events_total", type="customer.subscription.deleted",
                  outcome="applied") == 0
