"""The app factory's conventions: health, readiness, metrics, request ids, the error model."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.events import event_tap
from tests.fixtures.people import invite_and_join, make_admin


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(values) if values else None


async def test_health_ready_and_error_model(platform):
    async with platform.client() as client:
        health = await client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database:auth": "ok", "database:members": "ok", "broker": "ok"} | {
            k: "ok" for k in ready.json()["checks"] if k.startswith("database:")
        }
        missing = await client.get("/no/such/route", headers={"X-Request-ID": "req-123"})
        assert missing.status_code == 404
        assert missing.json() == {"error": "not_found", "detail": "Not Found"}
        assert missing.headers["x-request-id"] == "req-123"
        assert len((await client.get("/health")).headers["x-request-id"]) == 32


async def test_metrics_after_traffic(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        await invite_and_join(client, tap, admin, "staff@example.com")
        await client.get(f"/members/{admin.member_id}", headers=admin.headers)
        text = (await client.get("/metrics")).text

    assert _sample(text, "http_request_duration_seconds_count", service="all", endpoint="/users/signIn",
                   method="POST", status="200") >= 2
    # Route templates, never raw ids, in the endpoint label.
    assert _sample(text, "http_request_duration_seconds_count", endpoint="/members/{member_id}", method="GET") >= 1
    assert admin.member_id not in text
    # auth -> members at every sign-in (the seed's matrix), seen by the caller.
    assert _sample(text, "http_client_request_duration_seconds_count", service="auth", target="members",
                   endpoint="/members/get/with/{email}", status="200") >= 2
    assert _sample(text, "http_client_request_duration_seconds_bucket", service="auth", target="members", le="+Inf") >= 2
    assert _sample(text, "amqp_messages_total", service="members", routing_key="roomee.notification.member.onboarding",
                   direction="publish", status="ok") >= 1
    assert _sample(text, "amqp_messages_total", service="auth", routing_key="roomee.notification.member.registered",
                   direction="publish", status="ok") >= 1
    assert "circuit_breaker_state" in text and "outbox_backlog" in text
