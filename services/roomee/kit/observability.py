"""Logs and traces (ARCHITECTURE §3, §7): JSON logs carrying the service, request and trace ids,
and an OpenTelemetry tracer provider whose context propagates over HTTP (W3C ``traceparent``).

- :data:`request_id_var` holds the id of the request being handled (set by the app middleware,
  or by a consumer from an event); logs and outgoing calls pick it up.
- :func:`configure_logging` installs one handler on the root logger (JSON or text); calling it
  again replaces that handler, so it is safe in tests and in ``--target all``.
- Access lines are for people: :class:`AccessLogFilter` redacts secrets in request targets
  (:func:`redact_target`) and moves probes and polls to DEBUG; :class:`RetryNotice` makes a task that
  retries say so once, and once again when it recovers.
- :func:`configure_tracing` installs the process-wide tracer provider once; later calls only add
  an exporter that is not installed yet.

Traces follow one set of current semantic conventions (HTTP ``http.request.method``, ``http.route``,
``http.response.status_code``, ``server.address``; database ``db.system.name``, ``db.operation.name``,
``db.query.text``; messaging ``messaging.system``, ``messaging.destination.name``,
``messaging.operation.type``). What leaves the process never holds a raw path: server spans are named
``METHOD /route/{template}``, client spans ``METHOD /path/{template}`` (no ``url.path``/``url.full``
with ids, emails or tokens in it), SQL text carries bound parameters, never their values.
Kept out of traces (:class:`QuietSampler`): probes, scrapes and the platform's once-a-second polls
(:data:`QUIET_PATHS`), and database statements outside any traced operation (relay and lease polls).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from datetime import datetime, timezone
from contextvars import ContextVar
from typing import Any, TextIO

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Status, StatusCode
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"

request_id_var: ContextVar[str | None] = ContextVar("roomee_request_id", default=None)

tracer = trace.get_tracer("roomee")

_HANDLER_MARK = "_roomee_handler"
_JSON_FIELDS = ["levelname", "name", "message", "service", "request_id", "trace_id", "span_id"]
_TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [%(service)s] "
    "request_id=%(request_id)s trace_id=%(trace_id)s %(message)s"
)

_tracer_provider: TracerProvider | None = None
_installed_exporters: set[tuple[str, str | None]] = set()


# -- logging ------------------------------------------------------------------------------------


class ContextFilter(logging.Filter):
    """Adds ``service``, ``request_id``, ``trace_id`` and ``span_id`` to every record.

    A value the record already carries (given through ``extra``) is kept.
    """

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "service", None) is None:
            record.service = self.service
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "trace_id", None) is None:
            trace_id, span_id = current_trace_ids()
            record.trace_id = trace_id
            record.span_id = span_id
        elif not hasattr(record, "span_id"):
            record.span_id = None
        return True


def current_trace_ids() -> tuple[str | None, str | None]:
    """The current span's trace id (32 hex) and span id (16 hex), or ``(None, None)``."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


class _RoomeeJsonFormatter(JsonFormatter):
    """JSON lines starting with an ISO 8601 UTC ``timestamp``."""

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["timestamp"] = datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(
            timespec="milliseconds"
        )
        super().add_fields(log_data, record, message_dict)


def _json_formatter() -> logging.Formatter:
    return _RoomeeJsonFormatter(
        _JSON_FIELDS,
        rename_fields={"levelname": "level", "name": "logger"},
        json_default=str,
    )


def configure_logging(settings: Any, service: str, *, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (default stdout) as JSON or text, per settings.

    JSON lines carry ``timestamp, level, logger, message, service, request_id, trace_id,
    span_id`` plus any ``extra`` fields. Idempotent: the handler this function installed before
    is replaced, other handlers (pytest's, for instance) are left alone.
    """
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, _HANDLER_MARK, False):
            root.removeHandler(existing)
            existing.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(ContextFilter(service))
    if settings.log_format == "json":
        handler.setFormatter(_json_formatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root.addHandler(handler)
    level = logging.getLevelName(str(settings.log_level).upper())
    root.setLevel(level if isinstance(level, int) else logging.INFO)
    # httpx logs every request at INFO; the ServiceClient already writes one line per call.
    if root.level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    _install_filter("uvicorn.access", AccessLogFilter())
    _install_filter("alembic.runtime.migration", DemoteFilter(lambda record: record.msg in _ALEMBIC_CHATTER))
    return handler


def _install_filter(logger_name: str, new: logging.Filter) -> None:
    """Put ``new`` on a logger, replacing the filter of the same class an earlier call installed."""
    logger = logging.getLogger(logger_name)
    for existing in list(logger.filters):
        if type(existing) is type(new):
            logger.removeFilter(existing)
    logger.addFilter(new)


# -- logs a person can read ---------------------------------------------------------------------

REDACTED = "[redacted]"
# Query parameters whose value is a credential (compared case-insensitively).
SECRET_PARAMETERS = (
    "token", "access_token", "refresh_token", "id_token", "code", "password", "secret", "client_secret",
    "signature", "sig", "api_key", "apikey", "key", "x-goog-signature", "x-goog-credential",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token",
)
_SECRET_QUERY = re.compile(
    r"(?i)(?P<name>(?:^|[?&;])(?:%s)=)[^&;#]*" % "|".join(re.escape(name) for name in SECRET_PARAMETERS)
)
# Paths whose segment is a credential: an invitation token (its fixed sub-routes excepted).
_SECRET_PATHS = (re.compile(r"^(?P<name>/members/invitations/)(?!(?:accept|lookup)(?:[/?#]|$))[^/?#]+"),)
# Routes that probes, scrapers and the platform's own polls call every few seconds.
QUIET_PATHS = frozenset({"/health", "/health/ready", "/metrics",
                         "/members/access-changes", "/users/sessions/revocations"})
_ALEMBIC_CHATTER = frozenset({"Context impl %s.", "Will assume %s DDL.", "Will assume non-transactional DDL.",
                              "Will assume transactional DDL."})


_ID_LIKE = re.compile(r"@|%40|\d.*\d|[^/]{20,}")


def redact_url_path(target: str) -> str:
    """A request target for a span of a call whose route template is unknown (a provider's URL): the
    credentials of :func:`redact_target` and every path segment that looks like an id, an email or a
    token (two digits or more, an ``@``, or 20 characters and more) replaced by ``{id}``."""
    target = redact_target(target)
    path, separator, query = target.partition("?")
    segments = ["{id}" if _ID_LIKE.search(segment) and segment != REDACTED else segment
                for segment in path.split("/")]
    return "/".join(segments) + separator + query


def redact_target(target: str) -> str:
    """A request target (path and query) with credentials replaced by ``[redacted]``."""
    for pattern in _SECRET_PATHS:
        target = pattern.sub(lambda match: match["name"] + REDACTED, target)
    path, separator, query = target.partition("?")
    if not separator:
        return target
    return path + "?" + _SECRET_QUERY.sub(lambda match: match["name"] + REDACTED, query)


def _demote(record: logging.LogRecord) -> bool:
    """Turn an INFO record into a DEBUG one; keep it only where DEBUG is wanted."""
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


class DemoteFilter(logging.Filter):
    """Moves the INFO records ``predicate`` picks to DEBUG (a library's chatter)."""

    def __init__(self, predicate) -> None:
        super().__init__()
        self.predicate = predicate

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and self.predicate(record):
            return _demote(record)
        return True


class AccessLogFilter(logging.Filter):
    """uvicorn's access lines: credentials in the target redacted, and the calls of probes, scrapers and
    polls (:data:`QUIET_PATHS`) moved to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (isinstance(args, tuple) and len(args) == 5):
            return True
        client, method, target, version, status = args
        target = redact_target(str(target))
        record.args = (client, method, target, version, status)
        # A readiness probe answered 503 every few seconds while a database is awaited says nothing the
        # platform has not said once already (and /health/ready's body says why).
        quiet = target.partition("?")[0] in QUIET_PATHS
        return _demote(record) if quiet and record.levelno == logging.INFO else True


class RetryNotice:
    """How work that retries talks: its first failure once (at ``level``), the retries after it at DEBUG,
    and its recovery once at INFO. A peer still starting (connection refused) then costs two lines, not
    one a tick."""

    def __init__(self, logger: logging.Logger, what: str, *, level: int = logging.WARNING,
                 extra: dict[str, Any] | None = None) -> None:
        self.logger, self.what, self.level, self.extra = logger, what, level, extra or {}
        self.failures = 0

    def failed(self, exc: BaseException, retry: str = "retrying quietly", *, traceback: bool = False) -> None:
        """``traceback``: the first line carries it (an unexpected error, not a peer that is down)."""
        self.failures += 1
        first = self.failures == 1
        self.logger.log(self.level if first else logging.DEBUG, "%s failed (%s: %s); %s", self.what,
                        type(exc).__name__, exc, retry, extra=self.extra, exc_info=exc if first and traceback else None)

    def succeeded(self) -> None:
        if self.failures:
            self.logger.info("%s recovered after %d failed attempt(s)", self.what, self.failures, extra=self.extra)
        self.failures = 0


# -- tracing ------------------------------------------------------------------------------------


def _span_exporter(settings: Any) -> SpanExporter | None:
    exporter = settings.otel_exporter
    if exporter == "none":
        return None
    if exporter == "console":
        return ConsoleSpanExporter()
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otel_endpoint
        if endpoint:
            endpoint = endpoint.rstrip("/")
            if not endpoint.endswith("/v1/traces"):
                endpoint = f"{endpoint}/v1/traces"
        return OTLPSpanExporter(endpoint=endpoint)
    raise ValueError(f"unknown otel exporter {exporter!r}")


def _span_processor(settings: Any, exporter: SpanExporter) -> SpanProcessor:
    if settings.otel_exporter == "console":
        return SimpleSpanProcessor(exporter)
    return BatchSpanProcessor(exporter)


def configure_tracing(settings: Any, service: str) -> TracerProvider:
    """Install the process tracer provider (``service.name = roomee-<service>``) and exporter.

    With exporter ``none`` spans are not exported, but they are recorded, so trace ids appear in
    logs and propagate to other services. OpenTelemetry allows one global provider per process:
    the first call sets it (or adopts an SDK provider someone else installed), later calls only
    add an exporter not installed yet.
    """
    global _tracer_provider
    if _tracer_provider is None:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            _tracer_provider = current
        else:
            provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"roomee-{service}"}),
                                      sampler=QuietSampler())
            trace.set_tracer_provider(provider)
            _tracer_provider = provider
    key = (settings.otel_exporter, settings.otel_endpoint if settings.otel_exporter == "otlp" else None)
    if settings.otel_exporter != "none" and key not in _installed_exporters:
        exporter = _span_exporter(settings)
        if exporter is not None:
            _tracer_provider.add_span_processor(_span_processor(settings, exporter))
        _installed_exporters.add(key)
    _instrument_httpx()
    return _tracer_provider


def spans_exported() -> bool:
    """Whether the process's provider hands finished spans to any processor (an exporter, a test's
    in-memory one): with none (``otel_exporter = none``) a span is only recorded for its ids."""
    provider = _tracer_provider or trace.get_tracer_provider()
    active = getattr(provider, "_active_span_processor", None)
    return bool(getattr(active, "_span_processors", ()))


def propagation_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus the W3C trace context and the current request id, for an outgoing call
    or message."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    request_id = request_id_var.get()
    if request_id and not any(name.lower() == REQUEST_ID_HEADER.lower() for name in carrier):
        carrier[REQUEST_ID_HEADER] = request_id
    return carrier


# -- what is traced -----------------------------------------------------------------------------

# The contrib instrumentations (httpx, SQLAlchemy) write the current conventions only.
SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
_SEMCONV_CURRENT = "http,database"
# Attributes naming a route or a path template, given when a span starts (the sampler sees them).
_TEMPLATE_ATTRIBUTES = ("http.route", "url.template")


class QuietSampler(Sampler):
    """Spans of the probes, scrapers and polls (:data:`QUIET_PATHS`) are dropped, with everything under
    them (their context propagates unsampled, so the callee drops its side too); every other span
    follows its parent (a root is sampled)."""

    def __init__(self) -> None:
        self._default = ParentBased(ALWAYS_ON)

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None) -> SamplingResult:
        if attributes and any(attributes.get(key) in QUIET_PATHS for key in _TEMPLATE_ATTRIBUTES):
            return SamplingResult(Decision.DROP, None, None)
        return self._default.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "QuietSampler{ParentBased{AlwaysOn}, dropping " + ",".join(sorted(QUIET_PATHS)) + "}"


_sdk_tracer = None


def _server_tracer():
    """The SDK's tracer once the process has its provider (the module's ``tracer`` is a proxy, which wraps
    each span's context manager in one of its own: a few percent of a one-row read)."""
    global _sdk_tracer
    if _sdk_tracer is None:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            return tracer
        _sdk_tracer = provider.get_tracer("roomee")
    return _sdk_tracer


def start_server_span(scope: dict[str, Any], parent: Any):
    """The server span of one ASGI HTTP request, as the current span (a context manager). Named by the
    method until :func:`finish_server_span` knows the route; the request line is not recorded, since a
    path may carry a secret."""
    method = scope["method"]
    attributes: dict[str, Any] = {
        "http.request.method": method if method in _HTTP_METHODS else "_OTHER",
        "url.scheme": scope.get("scheme", "http"),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    server = scope.get("server")
    if server:
        attributes["server.address"] = server[0]
        if server[1]:
            attributes["server.port"] = server[1]
    if scope["path"] in QUIET_PATHS:  # literal routes: the path is the template, the sampler drops it
        attributes["http.route"] = scope["path"]
    return _server_tracer().start_as_current_span(method if method in _HTTP_METHODS else "HTTP", context=parent,
                                        kind=trace.SpanKind.SERVER, attributes=attributes)


def finish_server_span(span: trace.Span, method: str, route: str | None, status: int) -> None:
    """Name the server span by its route (``GET /members/invitations/{token}``; the method alone when no
    route matched) and record the answer; a 5xx is an error."""
    if route:
        span.set_attribute("http.route", route)
    span.update_name(f"{method} {route}" if route else method)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))


_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
_instrumented: set[str] = set()


def _instrument_httpx() -> None:
    """Every ``httpx`` client of the process (JWKS, ``/oauth/token``, providers) carries the trace
    context and writes a client span; the :class:`~roomee.kit.http.ServiceClient` writes its own
    (named by the path template) and suppresses this one."""
    if "httpx" in _instrumented:
        return
    os.environ.setdefault(SEMCONV_OPT_IN, _SEMCONV_CURRENT)
    import httpx
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    def redact_url(span, request) -> None:
        if span.is_recording():
            url = request.url if isinstance(request.url, httpx.URL) else httpx.URL(str(request.url))
            origin = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
            span.set_attribute("url.full", origin + redact_url_path(url.raw_path.decode("latin-1")))

    async def redact_url_async(span, request) -> None:
        redact_url(span, request)

    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(request_hook=redact_url, async_request_hook=redact_url_async)
    _instrumented.add("httpx")


class _WithinOperations:
    """A tracer that starts spans only under a span being recorded: a statement of a traced request,
    publish or event is a child of it, while the relay's, the leases' and the polls' own statements (a
    root span each, several a second) are not traced."""

    def __init__(self, tracer_: trace.Tracer) -> None:
        self._tracer = tracer_

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        if not trace.get_current_span().is_recording():
            return trace.INVALID_SPAN
        return self._tracer.start_span(name, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracer, name)


def delivery_span(channel: str, provider: str, recipients: int):
    """The span of one delivery to people (``socket emit``, ``push onesignal``, ``email smtp``), as the
    current span (a context manager): who received it is counted, never named."""
    return tracer.start_as_current_span(f"{channel} {provider}", kind=trace.SpanKind.CLIENT, attributes={
        "roomee.delivery.channel": channel, "roomee.delivery.provider": provider,
        "roomee.delivery.recipients": recipients})


def instrument_engine(engine: Any) -> None:
    """Trace the statements of a SQLAlchemy engine (sync or async) with the contrib instrumentation:
    one ``CLIENT`` span per statement inside a traced operation."""
    os.environ.setdefault(SEMCONV_OPT_IN, _SEMCONV_CURRENT)
    from opentelemetry.instrumentation.sqlalchemy import __version__ as version
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    sync_engine = getattr(engine, "sync_engine", engine)
    connections = get_meter("opentelemetry.instrumentation.sqlalchemy", version).create_up_down_counter(
        "db.client.connections.usage", unit="connections")

    class _Statements(EngineTracer):
        def _operation_name(self, db_name, statement):
            # The statement's first word: the database (an SQLite file's path) is ``db.namespace``.
            return super()._operation_name(None, statement)

    _Statements(_WithinOperations(trace.get_tracer("opentelemetry.instrumentation.sqlalchemy", version)),
                sync_engine, connections)
