"""Publish and process spans (OpenTelemetry messaging conventions): the outbox relay publishes each event
under a PRODUCER span in the trace of the request that wrote it, the message carries that span's context,
and the consumer's span is its child, holding the handler's statements."""

from __future__ import annotations

import sqlalchemy as sa
from opentelemetry import trace

from roomee.kit.events import EventConsumer, OutboxRelay, emit_many
from roomee.kit.observability import tracer
from tests.kit.events.conftest import wait_until
from tests.kit.events.helpers import sample_envelope, unique_service
from tests.kit.test_observability import exported  # noqa: F401 - the fixture: spans recorded from now on

ROUTED = "roomee.notification.page.created"
UNBOUND = "roomee.traced.nobody.listens"


async def test_each_event_is_published_in_its_request_trace_and_processed_under_its_publish_span(
        exported, make_db, make_broker, queue_name):
    db = await make_db(unique_service("news"))
    consumer_db = await make_db(unique_service("notif"))
    broker = await make_broker()
    handled: list[str] = []

    async def handler(session, envelope, delivery):
        await session.execute(sa.text("SELECT 1"))
        handled.append(envelope["id"])

    queue = queue_name()
    consumer = EventConsumer(consumer_db, broker, "notif", queue, ["roomee.notification.#"], handler, prefetch=1)
    await consumer.start()
    relay = OutboxRelay(db, broker, "news")
    await relay.start()
    try:
        envelopes = [sample_envelope(n) for n in range(2)]
        with tracer.start_as_current_span("POST /api/v1/pages", kind=trace.SpanKind.SERVER) as request:
            async with db.transaction() as session:
                await emit_many(session, [(ROUTED, e) for e in envelopes] + [(UNBOUND, sample_envelope(9))])
        await wait_until(lambda: len(handled) == 2, timeout=10)
        await wait_until(lambda: len([s for s in exported.get_finished_spans()
                                      if s.kind == trace.SpanKind.CONSUMER]) == 2, timeout=5)
        await wait_until(lambda: any(s.kind == trace.SpanKind.PRODUCER and s.name == f"publish {UNBOUND}"
                                     for s in exported.get_finished_spans()), timeout=10)
    finally:
        await relay.stop()
        await consumer.stop()

    spans = exported.get_finished_spans()
    request_id = request.get_span_context()
    publishes = {s.attributes["messaging.message.id"]: s for s in spans
                 if s.kind == trace.SpanKind.PRODUCER and s.name == f"publish {ROUTED}"}
    assert set(publishes) == {e["id"] for e in envelopes}
    for envelope in envelopes:
        publish = publishes[envelope["id"]]
        assert publish.context.trace_id == request_id.trace_id and publish.parent.span_id == request_id.span_id
        assert {k: publish.attributes[k] for k in ("messaging.system", "messaging.destination.name",
                                                   "messaging.operation.type", "messaging.rabbitmq.destination.routing_key")} == {
            "messaging.system": broker.messaging_system, "messaging.destination.name": db.settings.exchange,
            "messaging.operation.type": "send", "messaging.rabbitmq.destination.routing_key": ROUTED}
        assert publish.status.status_code == trace.StatusCode.UNSET
        [process] = [s for s in spans if s.kind == trace.SpanKind.CONSUMER
                     and s.attributes["messaging.message.id"] == envelope["id"]]
        assert process.name == f"process {queue}"
        assert process.parent.span_id == publish.context.span_id  # the message carried the publish span
        assert process.attributes["messaging.operation.type"] == "process"
        assert process.attributes["roomee.event.type"] == envelope["type"]
        statements = [s for s in spans if s.parent is not None and s.parent.span_id == process.context.span_id
                      and "db.system.name" in s.attributes]
        assert "SELECT 1" in [s.attributes["db.query.text"] for s in statements]
    # No queue bound: the publish span says the event was not routed (its row waits in the outbox).
    unrouted = [s for s in spans if s.name == f"publish {UNBOUND}"]
    assert unrouted[0].status.status_code == trace.StatusCode.ERROR
    assert unrouted[0].attributes["error.type"] == "unroutable"
    # The relay's own polling statements are not traced (no root statement span).
    assert not [s for s in spans if "db.system.name" in s.attributes and s.parent is None]
