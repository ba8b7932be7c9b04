"""``create_app``: one FastAPI app serving one or several targets with the platform's conventions."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from opentelemetry import propagate
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from roomee import __version__
from roomee.kit.errors import RoomeeError
from roomee.kit.hot import HotRoutes
from roomee.kit.limits import BodyLimit, PayloadTooLarge, too_large
from roomee.kit.metrics import http_request_duration_seconds
from roomee.kit.metrics_listener import with_metrics_listener
from roomee.kit.openapi import allowed_methods, document, literal_path_guards
from roomee.kit.observability import finish_server_span, request_id_var, start_server_span
from roomee.kit.platform import Platform
from roomee.kit.settings import Settings

log = logging.getLogger("roomee.http.server")

UNMATCHED = "<unmatched>"
# Label values of the method: anything else a client sends is counted as OTHER (bounded labels).
# The request id and the W3C trace context (traceparent, tracestate, baggage): what the middleware reads.
_CONTEXT_HEADERS = frozenset({b"x-request-id", b"traceparent", b"tracestate", b"baggage"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# SQLSTATEs of text PostgreSQL cannot store (a NUL character, or one outside the encoding), which SQLite
# accepts: the client's input, so a 422 on every route rather than a validator on every string field.
UNSTORABLE_TEXT_SQLSTATES = frozenset({"22021", "22P05"})
UNSTORABLE_TEXT = "text must not contain NUL (U+0000) characters"
# A lost or refused database connection: the request may succeed once the pool reconnects.
DATABASE_RETRY_AFTER_SECONDS = "5"
_DATABASE_MODULES = ("sqlalchemy.", "asyncpg.", "aiosqlite.")
# A JSON string escape of NUL: an odd number of backslashes before "u0000".
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_TEXT_BODIES = (b"application/json", b"application/x-www-form-urlencoded")
_SERVED_WHILE_STARTING = ("/health", "/metrics", "/docs", "/redoc", "/openapi")
STARTING_RETRY_AFTER_SECONDS = "2"


# Request ids: 16 random hex digits per process then a counter (32 hex digits, as a UUID's): unique across
# processes without a UUID and a random read per request.
_REQUEST_IDS = itertools.count()
_REQUEST_ID_PREFIX = os.urandom(8).hex()


def _next_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_REQUEST_IDS) & 0xFFFFFFFFFFFFFFFF:016x}"


def _new_request_id_prefix() -> None:
    global _REQUEST_ID_PREFIX
    _REQUEST_ID_PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_new_request_id_prefix)  # a forked process is another prefix


class ObservabilityMiddleware:
    """Request id, a server span with the caller's trace context, and the latency histogram."""

    def __init__(self, app, service: str) -> None:
        self.app = app
        self.service = service
        self._histograms: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # Only the headers read here are decoded (ASGI servers give names in lower case).
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _CONTEXT_HEADERS}
        request_id = headers.get("x-request-id") or _next_request_id()
        token = request_id_var.set(request_id)
        status = {"code": 500, "started": False}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        started = time.perf_counter()
        parent = propagate.extract(headers)
        # Named by its route once routed ("GET /members/invitations/{token}"): a path may carry a secret.
        with start_server_span(scope, parent) as span:
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception as exc:
                # The one error path of an unhandled error: logged here once; the app's handler has
                # answered the error document, else it is answered now. Not re-raised, since the
                # server would then close a keep-alive connection that is still usable.
                route = getattr(scope.get("route"), "path", None) or scope["path"]
                log.error("unhandled error on %s %s", scope["method"], route, exc_info=exc)
                span.record_exception(exc)
                if not status["started"]:
                    await _error(500, "internal_error", "an unexpected error occurred")(scope, receive, send_wrapper)
            finally:
                route = scope.get("route")
                endpoint = getattr(route, "path", None) or UNMATCHED
                method = scope["method"] if scope["method"] in HTTP_METHODS else "OTHER"
                duration = time.perf_counter() - started
                finish_server_span(span, method, getattr(route, "path", None), status["code"])
                if endpoint not in ("/metrics",):
                    key = (endpoint, method, status["code"])
                    histogram = self._histograms.get(key)
                    if histogram is None:  # route templates, methods and statuses: a bounded set of keys
                        histogram = self._histograms[key] = http_request_duration_seconds.labels(
                            self.service, endpoint, method, str(status["code"]))
                    histogram.observe(duration)
                request_id_var.reset(token)


class TextGuard:
    """Refuses NUL characters in the path, the query and JSON or form bodies with 422 ``invalid_text``
    before any route runs: PostgreSQL cannot store them and SQLite can, so both backends answer alike
    (and no string field needs a validator of its own)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if "\x00" in scope["path"] or b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]:
            return await _error(422, "invalid_text", UNSTORABLE_TEXT)(scope, receive, send)
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return await self.app(scope, receive, send)
        content_type = next((value for name, value in scope["headers"] if name == b"content-type"), b"")
        if not content_type.startswith(_TEXT_BODIES):
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if _JSON_NUL.search(body) if content_type.startswith(b"application/json") else b"%00" in body:
            return await _error(422, "invalid_text", UNSTORABLE_TEXT)(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class StartGate:
    """Until every database of the process is at its migrations' head, routes answer 503 ``starting``
    (what start-up waits for in ``detail``); health, metrics and the documents answer at once."""

    def __init__(self, app, platform: Platform) -> None:
        self.app = app
        self.platform = platform

    async def __call__(self, scope, receive, send):
        if self.platform.at_head or scope["type"] != "http" or scope["path"].startswith(_SERVED_WHILE_STARTING):
            return await self.app(scope, receive, send)
        waiting = dict(self.platform.waiting) or {"start-up": "checking the databases"}
        await _error(503, "starting", {"waitingFor": waiting}, {"Retry-After": STARTING_RETRY_AFTER_SECONDS})(
            scope, receive, send)


def _database_unavailable(exc: BaseException) -> bool:
    """A connection to a service's database lost or refused, or none free in the pool in time (not an
    error of the statement)."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc.orig, OSError)
    if not isinstance(exc, (ConnectionError, TimeoutError)):
        return False
    # Raised by the driver while connecting: make sure it is the database's, not another peer's.
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_globals.get("__name__", "").startswith(_DATABASE_MODULES):
            return True
        frame = frame.tb_next
    return False


def _error(status: int, code: str, detail, headers=None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def invalid_json(reason: str) -> JSONResponse:
    return _error(400, "invalid_json", f"the body is not valid JSON: {reason}")


def _json_body(request: Request) -> bool:
    """Whether the request's body is read as JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


def create_app(settings: Settings, targets: list) -> FastAPI:
    names = [spec.name for spec in targets]
    service_label = names[0] if len(names) == 1 else "all"
    platform = Platform(settings, targets)
    app = FastAPI(
        title=f"Roomee {service_label}",
        version=__version__,
        description="Roomee Platform API (" + ", ".join(f"{s.name} = {s.seed_name}" for s in targets) + ").",
        lifespan=platform.lifespan if settings.metrics_port is None else with_metrics_listener(
            platform.lifespan, settings.host, settings.metrics_port),
        # ObservabilityMiddleware already makes the server span (with the request id) and the latency
        # histogram; FastAPI's own would record each request a second time.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        **({} if settings.api_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}),
    )
    app.state.platform = platform
    app.state.service_label = service_label

    @app.exception_handler(RoomeeError)
    async def roomee_error(_request: Request, exc: RoomeeError):
        return _error(exc.status_code, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        malformed = next((err for err in exc.errors() if err.get("type") == "json_invalid"), None)
        if malformed is not None:
            reason = (malformed.get("ctx") or {}).get("error") or "JSON decode error"
            position = list(malformed.get("loc", ()))[1:2]
            return invalid_json(f"{reason} at position {position[0]}" if position else reason)
        detail = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg"), "type": err.get("type")} for err in exc.errors()
        ]
        return _error(422, "validation_error", detail)

    def database_unavailable(exc: BaseException) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return _error(503, "database_unavailable", "the database cannot be reached; retry later",
                      {"Retry-After": DATABASE_RETRY_AFTER_SECONDS})

    @app.exception_handler(DBAPIError)
    async def database_error(_request: Request, exc: DBAPIError):
        if getattr(exc.orig, "sqlstate", None) in UNSTORABLE_TEXT_SQLSTATES:
            return _error(422, "invalid_text", UNSTORABLE_TEXT)
        if _database_unavailable(exc):
            return database_unavailable(exc)
        raise exc  # any other database error is unexpected: the one error path below logs and answers it

    @app.exception_handler(PoolTimeout)
    async def pool_timeout(_request: Request, exc: PoolTimeout):
        return database_unavailable(exc)

    @app.exception_handler(OSError)
    async def connection_error(_request: Request, exc: OSError):
        if _database_unavailable(exc):
            return database_unavailable(exc)
        raise exc

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc, PayloadTooLarge):
            return too_large(exc.limit)
        if exc.status_code == 400 and isinstance(exc.__cause__, (ValueError, RecursionError)) and _json_body(request):
            # FastAPI's "There was an error parsing the body": a JSON body that is not UTF-8, or nested too deep.
            return invalid_json(f"{type(exc.__cause__).__name__}: {exc.__cause__}")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # every method of the path, not only those of the first route matched
            headers = {**(headers or {}), "Allow": allowed_methods([*app.routes, *target_routes], request.scope)}
        return _error(exc.status_code, code, exc.detail, headers)

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, _exc: Exception):
        # Only the answer: ObservabilityMiddleware logs the error once, when it reaches it.
        return _error(500, "internal_error", "an unexpected error occurred")

    @app.get("/health", tags=["health"], responses={503: {"description": "`start_failed`: its start-up failed; restart it."}})
    async def health():
        """Liveness: the process answers (503 once its start-up failed for an unexpected reason)."""
        if platform.failed:
            return _error(503, "start_failed", platform.failed)
        return {"status": "ok", "targets": names, "version": __version__}

    @app.get("/health/ready", tags=["health"])
    async def ready() -> JSONResponse:
        """Readiness: every database of this process answers, at its migrations' head. The broker is
        reported in `checks` but does not decide: during an outage writes go on through the outbox."""
        ok, checks = await platform.readiness()
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

    if settings.metrics_port is None:  # else on its own port only (roomee.kit.metrics_listener)
        @app.get("/metrics", tags=["health"], include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for spec in targets:
        app.include_router(spec.router)
    target_routes = [route for spec in targets for route in spec.router.routes]  # FastAPI nests included routers
    app.router.routes[:0] = literal_path_guards(target_routes)

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document(app.title, app.version, app.routes, app.description)
        return app.openapi_schema

    app.openapi = openapi

    @app.get("/openapi/{target}.json", tags=["health"], include_in_schema=False)
    async def target_openapi(target: str) -> JSONResponse:
        """The OpenAPI document of one target served by this process."""
        spec = next((s for s in targets if s.name == target), None)
        if spec is None or not settings.api_docs:
            return _error(404, "not_found", f"target '{target}' is not served here")
        return JSONResponse(document(f"Roomee {target} ({spec.seed_name})", __version__, spec.router.routes))

    if settings.allowed_origins:
        # Bearer tokens, never cookies: no credentials; preflights answered for the listed origins only.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID", "traceparent"],
            expose_headers=["X-Request-ID", "Retry-After", "Location"],
            max_age=600,
        )
    # The hot reads (roomee.kit.hot) after TextGuard's checks of the path and query, before FastAPI's routing.
    hot = HotRoutes(app, app, platform, cors=bool(settings.allowed_origins))
    app.state.hot_routes = hot
    # The body limit before TextGuard, which reads a JSON body whole before the app runs.
    bounded = BodyLimit(TextGuard(hot), [route for spec in targets for route in spec.router.routes], settings)
    asgi = ObservabilityMiddleware(StartGate(bounded, platform), service_label)
    for spec in targets:
        mount = spec.load(spec.mount)
        if mount is not None:
            asgi = mount(asgi, platform.services[spec.name])
    return _Wrapped(app, asgi)


class _Wrapped:
    """The ASGI callable served, keeping the FastAPI app reachable (``.fastapi``) for tests and tools."""

    def __init__(self, fastapi: FastAPI, asgi) -> None:
        self.fastapi = fastapi
        self.asgi = asgi
        self.state = fastapi.state

    async def __call__(self, scope, receive, send):
        await self.asgi(scope, receive, send)
