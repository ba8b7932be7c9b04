"""JSON/text logs carrying service, request and trace ids; the tracer provider."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timedelta

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from roomee.kit import observability
from roomee.kit.observability import (
    configure_logging,
    configure_tracing,
    propagation_headers,
    request_id_var,
    tracer,
)
from roomee.kit.settings import Settings


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict]:
    """The test's own records: the OpenTelemetry SDK may log too (a tracer provider an earlier test shut down
    warns on every span it is handed)."""
    records = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [record for record in records if not record.get("logger", "").startswith("opentelemetry")]


def test_json_logs_carry_the_contract_fields(restore_logging):
    stream = io.StringIO()
    configure_logging(Settings(log_format="json", log_level="INFO"), "news", stream=stream)
    logging.getLogger("roomee.test").info("hello %s", "world", extra={"pageId": "p1"})
    [record] = lines(stream)
    assert record["message"] == "hello world"
    assert record["level"] == "INFO"
    assert record["logger"] == "roomee.test"
    assert record["service"] == "news"
    assert record["pageId"] == "p1"
    assert list(record)[0] == "timestamp"
    assert datetime.fromisoformat(record["timestamp"]).utcoffset() == timedelta(0)
    assert record["request_id"] is None and record["trace_id"] is None and record["span_id"] is None


def test_json_logs_carry_trace_and_request_ids(restore_logging):
    configure_tracing(Settings(otel_exporter="none"), "tests")
    stream = io.StringIO()
    configure_logging(Settings(log_format="json"), "news", stream=stream)
    token = request_id_var.set("req-123")
    try:
        with tracer.start_as_current_span("work") as span:
            logging.getLogger("roomee.test").warning("inside")
            context = span.get_span_context()
    finally:
        request_id_var.reset(token)
    logging.getLogger("roomee.test").warning("outside")
    inside, outside = lines(stream)
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert inside["request_id"] == "req-123"
    assert outside["trace_id"] is None and outside["request_id"] is None


def test_configure_logging_is_idempotent(restore_logging):
    first, second = io.StringIO(), io.StringIO()
    configure_logging(Settings(log_format="json"), "news", stream=first)
    configure_logging(Settings(log_format="json", log_level="WARNING"), "news", stream=second)
    marked = [h for h in logging.getLogger().handlers if getattr(h, "_roomee_handler", False)]
    assert len(marked) == 1
    logging.getLogger("roomee.test").warning("once")
    logging.getLogger("roomee.test").info("filtered by the new level")
    assert first.getvalue() == ""
    assert [r["message"] for r in lines(second)] == ["once"]


def test_text_format(restore_logging):
    stream = io.StringIO()
    configure_logging(Settings(log_format="text"), "hotel", stream=stream)
    token = request_id_var.set("r-9")
    try:
        logging.getLogger("roomee.test").info("plain")
    finally:
        request_id_var.reset(token)
    line = stream.getvalue().strip()
    assert "INFO roomee.test [hotel] request_id=r-9" in line
    assert line.endswith("plain")


def test_configure_tracing_installs_one_provider():
    provider = configure_tracing(Settings(otel_exporter="none"), "tests")
    assert isinstance(provider, TracerProvider)
    assert trace.get_tracer_provider() is provider
    assert configure_tracing(Settings(otel_exporter="none"), "tests") is provider
    assert provider.resource.attributes["service.name"].startswith("roomee-")
    with tracer.start_as_current_span("recorded") as span:
        assert span.is_recording()


def test_otlp_exporter_targets_the_traces_path():
    exporter = observability._span_exporter(
        Settings(otel_exporter="otlp", otel_endpoint="http://collector:4318/")
    )
    assert exporter._endpoint == "http://collector:4318/v1/traces"
    exporter.shutdown()
    assert observability._span_exporter(Settings(otel_exporter="none")) is None


def test_propagation_headers_carry_trace_context_and_request_id():
    configure_tracing(Settings(otel_exporter="none"), "tests")
    token = request_id_var.set("req-7")
    try:
        with tracer.start_as_current_span("outgoing") as span:
            headers = propagation_headers({"Accept": "application/json"})
            trace_id = format(span.get_span_context().trace_id, "032x")
    finally:
        request_id_var.reset(token)
    assert headers["Accept"] == "application/json"
    assert headers["X-Request-ID"] == "req-7"
    assert headers["traceparent"].split("-")[1] == trace_id


@pytest.mark.parametrize("target, expected", [
    ("/members/invitations/Abc_123-xyz", "/members/invitations/[redacted]"),
    ("/members/invitations/accept", "/members/invitations/accept"),
    ("/members/invitations/lookup", "/members/invitations/lookup"),
    ("/signup?token=Abc_123&lang=fr", "/signup?token=[redacted]&lang=fr"),
    ("/media/objects/h/1/a.png?expires=99&signature=f00d", "/media/objects/h/1/a.png?expires=99&signature=[redacted]"),
    ("/b/o?X-Goog-Date=1&X-Goog-Signature=abc&x-goog-credential=sa", "/b/o?X-Goog-Date=1&X-Goog-Signature=[redacted]&x-goog-credential=[redacted]"),
    ("/socket.io/?EIO=4&transport=polling&TOKEN=eyJ", "/socket.io/?EIO=4&transport=polling&TOKEN=[redacted]"),
    ("/cb?code=1&state=2&password=p&sig=s", "/cb?code=[redacted]&state=2&password=[redacted]&sig=[redacted]"),
    ("/api/v1/pages?tokenizer=1&keyword=x", "/api/v1/pages?tokenizer=1&keyword=x"),  # only whole names
    ("/health", "/health"),
])
def test_credentials_in_request_targets_are_redacted(target, expected):
    assert observability.redact_target(target) == expected


def test_access_lines_are_redacted_and_polls_and_probes_go_to_debug(restore_logging, monkeypatch):
    stream = io.StringIO()
    observability.configure_logging(Settings(log_format="json", log_level="INFO"), "auth", stream=stream)
    access = logging.getLogger("uvicorn.access")
    # As `roomee run` leaves it (log_config=None), whatever an earlier uvicorn.Config of this process did.
    for logger in (access, logging.getLogger("uvicorn")):
        for name, value in (("propagate", True), ("handlers", []), ("level", logging.NOTSET), ("disabled", False)):
            monkeypatch.setattr(logger, name, value)
    line = '%s - "%s %s HTTP/%s" %d'
    access.info(line, "203.0.113.7:0", "GET", "/members/invitations/s3cr3t-t0ken", "1.1", 200)
    for path, status in (("/health", 200), ("/health/ready", 503), ("/metrics", 200),
                         ("/members/access-changes?after=2", 200), ("/users/sessions/revocations", 200)):
        access.info(line, "127.0.0.1:5", "GET", path, "1.1", status)
    access.info(line, "127.0.0.1:5", "POST", "/users/signIn", "1.1", 200)
    written = [entry["message"] for entry in lines(stream)]
    assert written == ['203.0.113.7:0 - "GET /members/invitations/[redacted] HTTP/1.1" 200',
                       '127.0.0.1:5 - "POST /users/signIn HTTP/1.1" 200']
    logging.getLogger().setLevel(logging.DEBUG)  # wanted at DEBUG: there, at DEBUG
    access.info(line, "127.0.0.1:5", "GET", "/health", "1.1", 200)
    assert lines(stream)[-1]["level"] == "DEBUG"


def test_a_retrying_task_says_so_once_and_once_when_it_recovers(caplog):
    caplog.set_level(logging.DEBUG)
    notice = observability.RetryNotice(logging.getLogger("roomee.test"), "syncing", level=logging.INFO)
    for _ in range(5):
        notice.failed(ConnectionRefusedError(111, "Connection refused"))
    notice.succeeded()
    notice.succeeded()
    levels = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "roomee.test"]
    assert [level for level, _ in levels] == [logging.INFO] + [logging.DEBUG] * 4 + [logging.INFO]
    assert levels[0][1].startswith("syncing failed (ConnectionRefusedError: [Errno 111] Connection refused)")
    assert levels[-1][1] == "syncing recovered after 5 failed attempt(s)"


async def test_server_spans_are_named_by_route_not_by_a_path_holding_a_secret(platform):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    configure_tracing(platform.settings, "members").add_span_processor(SimpleSpanProcessor(exported))
    async with platform.client() as client:
        answer = await client.get("/members/invitations/SeCrEtInViTaTiOnToKeN")
        assert answer.status_code == 401
    servers = [span for span in exported.get_finished_spans()
               if span.kind == trace.SpanKind.SERVER and span.attributes.get("http.route") == "/members/invitations/{token}"]
    assert [span.name for span in servers] == ["GET /members/invitations/{token}"]
    assert not [span for span in exported.get_finished_spans() if "SeCrEt" in span.name + str(dict(span.attributes))]
    exported.shutdown()


@pytest.fixture
def exported():
    """The spans the process records from now on (the provider is the process's, with its sampler)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    configure_tracing(Settings(otel_exporter="none"), "tests").add_span_processor(processor)
    yield exporter
    processor.shutdown()


def _served_app():
    """A FastAPI app behind the kit's ObservabilityMiddleware: a route that fails, one that answers 503,
    one that refuses, and the probe and poll routes."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from roomee.kit.app import ObservabilityMiddleware

    # As create_app: FastAPI's own telemetry off (the middleware makes the server span).
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False})

    @app.get("/boom/{item_id}")
    async def boom(item_id: str):
        raise RuntimeError("unexpected")

    @app.get("/busy/{item_id}")
    async def busy(item_id: str):
        return JSONResponse({"error": "unavailable"}, status_code=503)

    @app.get("/refused/{item_id}")
    async def refused(item_id: str):
        return JSONResponse({"error": "forbidden"}, status_code=403)

    async def quiet():
        with tracer.start_as_current_span("work under a poll"):
            return {"status": "ok"}

    for path in observability.QUIET_PATHS:
        app.add_api_route(path, quiet)
    return ObservabilityMiddleware(app, "tests")


async def test_a_5xx_server_span_is_an_error_a_4xx_is_not_and_spans_use_the_current_conventions(exported):
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_served_app()), base_url="http://roomee.test") as client:
        assert (await client.get("/boom/SECRET-1")).status_code == 500
        assert (await client.get("/busy/SECRET-2")).status_code == 503
        assert (await client.get("/refused/SECRET-3")).status_code == 403
    spans = {span.name: span for span in exported.get_finished_spans() if span.kind == trace.SpanKind.SERVER}
    assert set(spans) == {"GET /boom/{item_id}", "GET /busy/{item_id}", "GET /refused/{item_id}"}
    for name, status in (("GET /boom/{item_id}", 500), ("GET /busy/{item_id}", 503)):
        assert spans[name].status.status_code == trace.StatusCode.ERROR
        assert spans[name].attributes["http.response.status_code"] == status
        assert spans[name].attributes["error.type"] == str(status)
    refused = spans["GET /refused/{item_id}"]
    assert refused.status.status_code == trace.StatusCode.UNSET
    assert dict(refused.attributes) == {
        "http.request.method": "GET", "url.scheme": "http", "network.protocol.version": "1.1",
        "server.address": "roomee.test", "http.route": "/refused/{item_id}",
        "http.response.status_code": 403,
    }
    assert [event.name for event in spans["GET /boom/{item_id}"].events] == ["exception"]
    assert not [(span.name, dict(span.attributes)) for span in exported.get_finished_spans() if "SECRET" in span.name + str(dict(span.attributes))]


async def test_probes_and_polls_are_not_traced_nor_anything_under_them(exported):
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_served_app()), base_url="http://roomee.test") as client:
        for path in sorted(observability.QUIET_PATHS):
            assert (await client.get(path)).status_code == 200, path
        # The caller's side: a client span of a poll is dropped, and its context goes out unsampled.
        with tracer.start_as_current_span("poll", kind=trace.SpanKind.CLIENT,
                                          attributes={"url.template": "/members/access-changes"}):
            sent = propagation_headers()
        assert (await client.get("/boom/x")).status_code == 500  # traced: the sampler drops only the quiet
    assert int(sent["traceparent"].rsplit("-", 1)[1], 16) & 1 == 0  # the sampled flag is off
    assert [span.name for span in exported.get_finished_spans()] == ["GET /boom/{item_id}"]


def test_a_provider_url_keeps_its_shape_without_ids_emails_or_tokens():
    redact = observability.redact_url_path
    assert redact("/.well-known/jwks.json") == "/.well-known/jwks.json"
    assert redact("/oauth/token") == "/oauth/token"
    assert redact("/api/v1/notifications") == "/api/v1/notifications"
    assert redact("/members/get/with/ada@hotel.example.com") == "/members/get/with/{id}"
    assert redact("/members/get/with/ada%40hotel.example.com") == "/members/get/with/{id}"
    assert redact("/v1/customers/cus_N4x9Ls2Q") == "/v1/customers/{id}"
    assert redact("/pages/3f2a6c1e-1111-2222-3333-444455556666/like?token=abc&limit=5") == \
        "/pages/{id}/like?token=[redacted]&limit=5"
    assert redact("/members/invitations/SeCrEtInViTaTiOnToKeN") == "/members/invitations/[redacted]"
