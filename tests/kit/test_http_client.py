"""ServiceClient against a real HTTP server (uvicorn on a random loopback port)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from roomee.kit import errors
from roomee.kit.breaker import BreakerState
from roomee.kit.http import ServiceClient, raise_for_status
from roomee.kit.observability import configure_tracing, request_id_var, tracer
from roomee.kit.settings import Settings

TOKEN = "service-token-abc"

hits: dict[str, int] = {}


def count(request: Request) -> None:
    hits[request.url.path] = hits.get(request.url.path, 0) + 1


async def echo(request: Request) -> JSONResponse:
    count(request)
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "authorization": ",".join(request.headers.getlist("authorization")) or None,
            "traceparent": request.headers.get("traceparent"),
            "requestId": request.headers.get("x-request-id"),
            "body": body.decode() or None,
        }
    )


async def fail(request: Request) -> JSONResponse:
    count(request)
    return JSONResponse({"error": "internal_error", "detail": "boom"}, status_code=500)


async def slow(request: Request) -> JSONResponse:
    count(request)
    await asyncio.sleep(0.6)
    return JSONResponse({"late": True})


async def missing(request: Request) -> JSONResponse:
    count(request)
    return JSONResponse({"error": "member_not_found", "detail": "no member a@b.c"}, status_code=404)


async def status(request: Request) -> PlainTextResponse:
    count(request)
    return PlainTextResponse("nope", status_code=int(request.path_params["code"]))


async def raw_path(request: Request) -> JSONResponse:
    count(request)
    return JSONResponse({"rawPath": request.scope["raw_path"].decode()})


app = Starlette(
    routes=[
        Route("/echo", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/raw/{value:path}", raw_path),
        Route("/members/get/with/{email}", echo),
        Route("/fail", fail),
        Route("/slow", slow),
        Route("/missing", missing),
        Route("/status/{code:int}", status),
    ]
)


@pytest.fixture(scope="module")
def server_url():
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def settings():
    return Settings(
        http_timeout_ms=200,
        breaker_volume_threshold=5,
        breaker_error_threshold_percentage=50,
        breaker_reset_timeout_ms=10_000,
        breaker_rolling_window_ms=10_000,
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


async def token() -> str:
    return TOKEN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client_sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_sends_bearer_trace_context_and_request_id(server_url, settings):
    configure_tracing(Settings(otel_exporter="none"), "tests")
    async with ServiceClient("news", "members", server_url, token_provider=token, settings=settings) as client:
        reset = request_id_var.set("req-42")
        try:
            with tracer.start_as_current_span("handler") as span:
                response = await client.get("/echo", params={"a": "1"})
                trace_id = format(span.get_span_context().trace_id, "032x")
        finally:
            request_id_var.reset(reset)
    body = response.json()
    assert response.status_code == 200
    assert body["authorization"] == f"Bearer {TOKEN}"
    assert body["requestId"] == "req-42"
    assert body["query"] == {"a": "1"}
    version, sent_trace_id, parent_span_id, flags = body["traceparent"].split("-")
    assert (version, sent_trace_id) == ("00", trace_id)
    assert parent_span_id != format(span.get_span_context().span_id, "016x")  # the client span


async def test_verbs_and_json_body(server_url, settings):
    async with ServiceClient("news", "members", server_url, token_provider=token, settings=settings) as client:
        for verb in ("post", "put", "patch", "delete"):
            response = await getattr(client, verb)("/echo", json={"x": 1}, headers={"authorization": "Bearer user"})
            body = response.json()
            assert body["method"] == verb.upper()
            assert body["authorization"] == "Bearer user"
            if verb != "delete":
                assert body["body"] == '{"x":1}'


async def test_log_line_and_metric_per_call(server_url, settings, caplog):
    caplog.set_level(logging.INFO, logger="roomee.http.client")
    labels = {
        "service": "metrics-test",
        "target": "members",
        "endpoint": "/members/get/with/{email}",
        "status": "200",
    }
    before = client_sample("http_client_request_duration_seconds_count", labels)
    async with ServiceClient("metrics-test", "members", server_url, token_provider=token, settings=settings) as client:
        await client.get("/members/get/with/a@b.c", endpoint="/members/get/with/{email}")
    assert client_sample("http_client_request_duration_seconds_count", labels) == before + 1
    assert client_sample("http_client_request_duration_seconds_sum", labels) > 0
    [record] = [r for r in caplog.records if r.name == "roomee.http.client" and r.service == "metrics-test"]
    assert record.levelno == logging.INFO
    assert (record.target, record.endpoint, record.method, record.status) == (
        "members",
        "/members/get/with/{email}",
        "GET",
        "200",
    )
    assert isinstance(record.duration_ms, float) and record.duration_ms > 0


async def test_4xx_is_returned_and_mapped_by_raise_for_status(server_url, settings):
    async with ServiceClient("news", "members", server_url, token_provider=token, settings=settings) as client:
        response = await client.get("/missing")
        assert response.status_code == 404
        with pytest.raises(errors.NotFound) as raised:
            raise_for_status(response)
        assert raised.value.body() == {"error": "member_not_found", "detail": "no member a@b.c"}
        for code, error in [(400, errors.BadRequest), (401, errors.Unauthorized), (403, errors.Forbidden),
                            (409, errors.Conflict), (410, errors.Gone), (422, errors.Unprocessable)]:
            with pytest.raises(error) as raised:
                raise_for_status(await client.get(f"/status/{code}"))
            assert raised.value.detail == "nope"
        with pytest.raises(errors.UpstreamError):
            raise_for_status(await client.get("/status/405"))
        assert raise_for_status(await client.get("/echo")).status_code == 200
        # 4xx answers are successes for the breaker.
        for _ in range(6):
            await client.get("/status/409")
        assert client.breaker.state is BreakerState.CLOSED


async def test_5xx_raises_upstream_error_and_opens_the_circuit(server_url, settings, caplog):
    caplog.set_level(logging.INFO, logger="roomee.http.client")
    clock = FakeClock()
    async with ServiceClient(
        "breaker-test", "hotel", server_url, token_provider=token, settings=settings, clock=clock
    ) as client:
        hits.pop("/fail", None)
        for _ in range(5):
            with pytest.raises(errors.UpstreamError):
                await client.get("/fail")
        assert client.breaker.state is BreakerState.OPEN
        assert REGISTRY.get_sample_value(
            "circuit_breaker_state", {"service": "breaker-test", "target": "hotel"}
        ) == 2

        with pytest.raises(errors.ServiceUnavailable) as raised:
            await client.get("/fail")
        assert raised.value.status_code == 503
        assert raised.value.detail == "hotel is unavailable (circuit open)"
        assert raised.value.headers == {"Retry-After": "10"}
        assert hits["/fail"] == 5  # failed fast: no request reached the server
        statuses = [
            r.status for r in caplog.records if r.name == "roomee.http.client" and r.service == "breaker-test"
        ]
        assert statuses == ["500"] * 5 + ["circuit_open"]

        clock.now += 10  # half-open: one trial call, which succeeds
        assert (await client.get("/echo")).status_code == 200
        assert client.breaker.state is BreakerState.CLOSED


async def test_timeout_is_service_unavailable_and_a_failure(server_url, settings):
    settings.breaker_volume_threshold = 2
    async with ServiceClient("timeout-test", "media", server_url, token_provider=token, settings=settings) as client:
        started = time.perf_counter()
        with pytest.raises(errors.ServiceUnavailable) as raised:
            await client.get("/slow")
        assert time.perf_counter() - started < 0.5
        assert "200 ms" in raised.value.detail
        assert client.breaker.stats.failures == 1
        with pytest.raises(errors.ServiceUnavailable):
            await client.get("/slow")
        assert client.breaker.state is BreakerState.OPEN
    labels = {"service": "timeout-test", "target": "media", "endpoint": "/slow", "status": "timeout"}
    assert client_sample("http_client_request_duration_seconds_count", labels) == 2


async def test_connection_refused_is_service_unavailable(settings):
    url = f"http://127.0.0.1:{free_port()}"
    async with ServiceClient("conn-test", "billing", url, token_provider=token, settings=settings) as client:
        with pytest.raises(errors.ServiceUnavailable) as raised:
            await client.post("/sub/assign-subscription/", json={})
        assert "unreachable" in raised.value.detail
        assert client.breaker.stats.failures == 1


async def test_transport_read_timeout_counts_as_failure(settings):
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    settings.breaker_volume_threshold = 1
    transport = httpx.MockTransport(handler)
    async with ServiceClient(
        "mock-test", "news", "http://news.invalid", token_provider=token, settings=settings, transport=transport
    ) as client:
        with pytest.raises(errors.ServiceUnavailable):
            await client.get("/api/v1/pages")
        assert client.breaker.state is BreakerState.OPEN


async def test_an_unexpected_redirect_is_an_upstream_error_not_a_response(server_url, settings, caplog):
    """Starlette redirects ``/echo/`` to ``/echo`` (307, empty body): a caller must not parse that as an answer."""
    caplog.set_level(logging.INFO, logger="roomee.http.client")
    async with ServiceClient("redirect-test", "members", server_url, token_provider=token, settings=settings) as client:
        with pytest.raises(errors.UpstreamError) as raised:
            await client.post("/echo/", json={})
    assert "redirect" in str(raised.value.detail) and "307" in str(raised.value.detail)
    [record] = [r for r in caplog.records if getattr(r, "service", None) == "redirect-test"]
    assert record.levelno == logging.WARNING and record.status == "307"


async def test_path_params_are_encoded_as_one_segment_and_label_by_template(server_url, settings):
    labels = {"service": "path-test", "target": "members", "endpoint": "/raw/{value}", "status": "200"}
    before = client_sample("http_client_request_duration_seconds_count", labels)
    async with ServiceClient("path-test", "members", server_url, token_provider=token, settings=settings) as client:
        response = await client.get("/raw/{value}", path_params={"value": "a/b?c#d e%"})
    assert response.json()["rawPath"] == "/raw/a%2Fb%3Fc%23d%20e%25"
    assert client_sample("http_client_request_duration_seconds_count", labels) == before + 1
