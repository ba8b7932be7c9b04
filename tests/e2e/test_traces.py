"""Traces an SRE can use, exported over OTLP/HTTP to a receiver in the test (an aiohttp server decoding
``ExportTraceServiceRequest`` protobufs): seed Flow 2 (an article → ``page.created`` → the notification
consumer → socket and push) is one connected trace with its database, publish, process and delivery spans;
the probes and the platform's polls are not traced; and no span name or attribute holds a token, an email,
a password or an id the test used (ids appear only as route templates)."""

from __future__ import annotations

import asyncio
import gzip
from collections import defaultdict
from typing import Any

from aiohttp import web
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from roomee.kit.observability import QUIET_PATHS, configure_tracing
from roomee.notification.channels import NOTIFICATION_NEW
from tests.fixtures.platform import free_port
from tests.news.support import create_article, create_feed, news_team
from tests.notification.support import SocketInbox, eventually, pushed_to, register_device
from roomee.notification.processor import notification_id_for

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # opentelemetry.proto Span.SpanKind
STATUS_ERROR = 2


def _value(any_value) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    """``POST /v1/traces`` (protobuf, optionally gzip): every span received, flattened to a dict."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({
                        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex() or None, "name": span.name, "kind": span.kind,
                        "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                        "status": span.status.code, "scope": scope_spans.scope.name, "resource": resource,
                        "links": [{"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(),
                                   "attributes": {kv.key: _value(kv.value) for kv in link.attributes}}
                                  for link in span.links],
                        "events": [{"name": e.name, "attributes": {kv.key: _value(kv.value) for kv in e.attributes}}
                                   for e in span.events],
                    })
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def __aenter__(self) -> "OtlpReceiver":
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._runner.cleanup()


def _strings(value: Any) -> list[str]:
    """Every string leaf of a session document (tokens, ids, emails)."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


class Trees:
    """The spans received, by id, with their children (and the spans linking to them)."""

    def __init__(self, spans: list[dict[str, Any]]) -> None:
        self.spans = spans
        self.by_id = {span["span_id"]: span for span in spans}
        self.children: dict[str, list[dict]] = defaultdict(list)
        for span in spans:
            if span["parent"]:
                self.children[span["parent"]].append(span)
            for link in span["links"]:
                self.children[link["span_id"]].append(span)

    def below(self, root: dict[str, Any]) -> list[dict[str, Any]]:
        """Every span under ``root``, through parents and links."""
        seen, stack = {}, [root["span_id"]]
        while stack:
            for child in self.children.get(stack.pop(), []):
                if child["span_id"] not in seen:
                    seen[child["span_id"]] = child
                    stack.append(child["span_id"])
        return list(seen.values())


async def test_an_article_is_one_trace_from_the_request_to_the_push_with_nothing_secret_in_it(tmp_path):
    provider = configure_tracing(type("S", (), {"otel_exporter": "none", "otel_endpoint": None})(), "tests")
    async with OtlpReceiver() as receiver:
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.url), schedule_delay_millis=200)
        provider.add_span_processor(processor)
        try:
            async with news_team(tmp_path, members=2) as team:
                client, admin, members = team.client, team.admin, team.members
                for person in [admin, *members]:
                    await register_device(client, person, f"{person.email}-phone")
                socket = await SocketInbox(NOTIFICATION_NEW).connect(team.running, members[0])
                try:
                    feed = await create_feed(client, admin, "Actualités")
                    article = await create_article(client, admin, feed, title="Nouvelle politique RH")
                    envelope = await team.tap.wait_for("roomee.notification.page.created",
                                                       lambda e: e["payload"]["id"] == article["id"])
                    notification_id = notification_id_for(envelope["id"])

                    async def pushed():
                        return pushed_to(team.onesignal, notification_id) == sorted(f"{m.email}-phone" for m in members)

                    await eventually(pushed)
                    await socket.wait(NOTIFICATION_NEW, lambda p: p["id"] == notification_id)
                    # Probes, next to the platform's own polls (access changes, revocations) all along.
                    for path in ("/health", "/health/ready"):
                        await client.get(path)
                finally:
                    await socket.close()
                secrets = {admin.password, *(f"{p.email}-phone" for p in [admin, *members]),
                           article["id"], feed["id"], notification_id}
                for person in [admin, *members]:
                    secrets.update(s for s in _strings(person.session) if len(s) >= 8 or "@" in s)
                    secrets.add(person.email)
            # In a thread: the exporter posts to the receiver, which answers on this event loop.
            await asyncio.to_thread(provider.force_flush)
        finally:
            processor.shutdown()  # nothing goes to the receiver once it is gone

    trees = Trees(receiver.spans)
    spans = receiver.spans
    assert spans, "no span reached the OTLP receiver"

    # The news request: its server span, named by its route, holds its statements and the publish span.
    publishes = [s for s in spans if s["kind"] == PRODUCER and s["attributes"].get("messaging.message.id") == envelope["id"]]
    assert len(publishes) == 1, [s["name"] for s in publishes]
    [publish] = publishes
    assert publish["name"] == "publish roomee.notification.page.created"
    assert publish["attributes"]["messaging.operation.type"] == "send"
    assert publish["attributes"]["messaging.rabbitmq.destination.routing_key"] == "roomee.notification.page.created"
    assert publish["attributes"]["messaging.system"] in ("rabbitmq", "roomee_embedded")
    assert publish["attributes"]["messaging.destination.name"] == team.running.settings.exchange
    [request] = [s for s in spans if s["kind"] == SERVER and s["trace_id"] == publish["trace_id"]
                 and s["name"] == "POST /api/v1/pages"]
    assert request["attributes"]["http.route"] == "/api/v1/pages"
    assert request["attributes"]["http.request.method"] == "POST"
    assert request["attributes"]["http.response.status_code"] == 201
    assert "http.status_code" not in request["attributes"]  # one set of conventions, the current one
    under_request = trees.below(request)
    assert publish in under_request
    statements = [s for s in under_request if "db.system.name" in s["attributes"]]
    assert any(s["attributes"].get("db.operation.name", s["name"]).startswith("INSERT") for s in statements), \
        [s["name"] for s in statements]
    assert all(s["kind"] == CLIENT and "db.query.text" in s["attributes"] for s in statements)

    # The notification consumer's span continues that trace (or links to the publish span) and holds the
    # consumer's statements, the socket emit, and the push job it queued with the OneSignal call.
    consumers = [s for s in spans if s["kind"] == CONSUMER and s["name"].startswith("process ")
                 and s["name"].endswith("notification_queue") and s in trees.below(publish)]
    assert consumers, [s["name"] for s in spans if s["kind"] == CONSUMER]
    consumer = consumers[0]
    assert consumer["attributes"]["messaging.operation.type"] == "process"
    assert consumer["parent"] == publish["span_id"] or publish["span_id"] in [l["span_id"] for l in consumer["links"]]
    if consumer["parent"] == publish["span_id"]:  # one event: its own attributes
        assert consumer["attributes"]["messaging.message.id"] == envelope["id"]
        assert consumer["attributes"]["roomee.event.type"] == "page.created"
    under_consumer = trees.below(consumer)
    assert any("db.system.name" in s["attributes"] for s in under_consumer)
    assert any(s["name"] == "socket emit" for s in under_consumer), [s["name"] for s in under_consumer]
    pushes = [s for s in under_consumer if s["name"] == "push onesignal"]
    assert pushes and pushes[0]["attributes"]["roomee.delivery.recipients"] >= 1
    assert any(s["kind"] == CONSUMER and s["name"].endswith("notification_push_queue") for s in under_consumer)

    # Calls for keys and tokens carry the trace context: their server span has a parent.
    for span in spans:
        if span["kind"] == SERVER and span["name"] in ("GET /.well-known/jwks.json", "POST /oauth/token"):
            assert span["parent"] is not None, span["name"]

    # The probes and the platform's polls are not traced, nor are statements outside a traced operation.
    for span in spans:
        route = span["attributes"].get("http.route") or span["attributes"].get("url.template")
        assert route not in QUIET_PATHS, span["name"]
        assert not any(path in span["name"] for path in QUIET_PATHS if path != "/health"), span["name"]
        if "db.system.name" in span["attributes"]:
            assert span["parent"] is not None, span["name"]

    # Nothing a person or a client could be told apart by: no token, email, password or id of the test.
    for span in spans:
        texts = [span["name"], *map(str, span["attributes"].values()),
                 *(str(v) for link in span["links"] for v in link["attributes"].values()),
                 *(str(v) for event in span["events"] for v in event["attributes"].values())]
        for secret in secrets:
            leaks = [text for text in texts if secret in text]
            assert not leaks, f"{span['name']} holds {secret!r}: {leaks}"
