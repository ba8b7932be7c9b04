"""The one client for inter-service HTTP calls (ARCHITECTURE §3).

Every call carries the caller's service bearer token, the W3C trace context and the request id;
it is bounded by ``http_timeout_ms`` and goes through a :class:`CircuitBreaker` (5xx responses,
connection errors and timeouts are failures; a 4xx means the callee is healthy). Each call writes
one log line on ``roomee.http.client`` and one ``http_client_request_duration_seconds`` sample.

Outcomes: a 2xx or 4xx response is returned (use :func:`raise_for_status` to turn a 4xx into the
kit's errors); a 3xx (never followed: a redirect between services is a wrong path) or a 5xx raises
:class:`UpstreamError`; a timeout, a connection error or an open circuit raises
:class:`ServiceUnavailable`.

Values in a path go through ``path_params`` (``client.get("/members/get/with/{email}",
path_params={"email": email})``): each is percent-encoded as one segment, and the template is the
endpoint label of logs and metrics, so labels stay bounded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import SpanKind, Status, StatusCode

from roomee.kit import errors
from roomee.kit.breaker import CircuitBreaker, CircuitOpenError
from roomee.kit.metrics import http_client_request_duration_seconds
from roomee.kit.observability import QUIET_PATHS, propagation_headers, tracer

log = logging.getLogger("roomee.http.client")

TokenProvider = Callable[[], Awaitable[str]]

_STATUS_ERRORS: dict[int, type[errors.RoomeeError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    410: errors.Gone,
    422: errors.Unprocessable,
    429: errors.TooManyRequests,
}


def is_failure(outcome: object) -> bool:
    """The breaker policy of inter-service calls: 5xx, connection errors and timeouts fail."""
    if isinstance(outcome, httpx.Response):
        return outcome.status_code >= 500
    return isinstance(outcome, (httpx.TransportError, TimeoutError))


def _error_body(response: httpx.Response) -> tuple[str | None, Any]:
    """The callee's ``(error, detail)``, or ``(None, text)`` when it did not use the error model."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return str(body["error"]), body.get("detail")
    text = response.text.strip()
    return None, (text[:500] if text else None)


def raise_for_status(response: httpx.Response) -> httpx.Response:
    """Return ``response`` when it is not an error; otherwise raise the matching kit error.

    A callee 4xx keeps its ``{"error", "detail"}`` body (400 BadRequest, 401 Unauthorized,
    403 Forbidden, 404 NotFound, 409 Conflict, 410 Gone, 422 Unprocessable, 429 TooManyRequests);
    any other status of 400 or more is an :class:`UpstreamError`.
    """
    status = response.status_code
    if status < 400:
        return response
    code, detail = _error_body(response)
    error_cls = _STATUS_ERRORS.get(status)
    if error_cls is None:
        target = response.request.url.host if response.request is not None else "upstream"
        raise errors.UpstreamError(
            {"status": status, "error": code, "detail": detail, "upstream": target}
        )
    headers = None
    if status == 429 and "retry-after" in response.headers:
        headers = {"Retry-After": response.headers["retry-after"]}
    raise error_cls(detail, code=code, headers=headers)


class ServiceClient:
    """Calls from ``service`` to ``target`` at ``base_url`` through one shared ``httpx.AsyncClient``.

    ``token_provider`` returns the caller's service token (awaited on every call, so it may cache
    and refresh). ``transport`` replaces the network (tests); ``clock`` is the breaker's clock.
    """

    def __init__(
        self,
        service: str,
        target: str,
        base_url: str,
        *,
        token_provider: TokenProvider | None,
        settings: Any,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.service = service
        self.target = target
        self.base_url = base_url.rstrip("/")
        self.timeout_ms: int = settings.http_timeout_ms
        self._token_provider = token_provider
        self.breaker = CircuitBreaker.from_settings(
            settings,
            service,
            target,
            timeout_ms=self.timeout_ms,
            is_failure=is_failure,
            clock=clock,
        )
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            transport=transport,
            timeout=httpx.Timeout(self.timeout_ms / 1000),
        )

    async def __aenter__(self) -> "ServiceClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- verbs ---------------------------------------------------------------------------------

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
        content: bytes | str | None = None,
        endpoint: str | None = None,
        path_params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Send one request; ``endpoint`` is the route template for logs and metrics
        (``"/members/get/with/{email}"``), default ``path`` (the template when ``path_params``
        fill it).

        An ``Authorization`` header given by the caller replaces the service token.
        """
        method = method.upper()
        endpoint = endpoint or path
        if path_params is not None:
            path = path.format_map({name: quote(str(value), safe="") for name, value in path_params.items()})
        outgoing = httpx.Headers()
        if self._token_provider is not None:
            outgoing["Authorization"] = f"Bearer {await self._token_provider()}"
        for name, value in (headers or {}).items():
            outgoing[name] = value  # case-insensitive: replaces the service token if given

        started = time.perf_counter()
        status = "error"
        with tracer.start_as_current_span(
            f"{method} {endpoint}",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": method,
                "url.template": endpoint,
                "server.address": self._client.base_url.host,
                "server.port": self._client.base_url.port or (443 if self._client.base_url.scheme == "https" else 80),
                "peer.service": self.target,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                request = self._client.build_request(
                    method,
                    path,
                    json=json,
                    params=params,
                    content=content,
                    headers=propagation_headers(dict(outgoing)),
                )
                try:
                    # This span names the call by its template; httpx's own (raw URL) is left out.
                    with suppress_http_instrumentation():
                        response = await self.breaker.call(self._client.send, request)
                except CircuitOpenError as exc:
                    status = "circuit_open"
                    raise errors.ServiceUnavailable(
                        f"{self.target} is unavailable (circuit open)",
                        headers={"Retry-After": str(max(1, round(exc.retry_after)))},
                    ) from exc
                except (httpx.TimeoutException, TimeoutError) as exc:
                    status = "timeout"
                    raise errors.ServiceUnavailable(
                        f"{self.target} did not answer within {self.timeout_ms} ms"
                    ) from exc
                except httpx.TransportError as exc:
                    status = "error"
                    raise errors.ServiceUnavailable(
                        f"{self.target} is unreachable ({type(exc).__name__})"
                    ) from exc
                status = str(response.status_code)
                span.set_attribute("http.response.status_code", response.status_code)
                if 300 <= response.status_code < 400:
                    raise errors.UpstreamError(
                        f"{self.target} answered {method} {endpoint} with an unexpected redirect "
                        f"({response.status_code} to {response.headers.get('location')!r})"
                    )
                if response.status_code >= 500:
                    code, _ = _error_body(response)
                    raise errors.UpstreamError(
                        f"{self.target} failed: {method} {endpoint} answered {response.status_code}"
                        + (f" ({code})" if code else "")
                    )
                return response
            except BaseException as exc:
                if status == "error" and not isinstance(exc, Exception):
                    status = "cancelled"
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", status if status != "error" else type(exc).__name__)
                raise
            finally:
                self._record(method, endpoint, status, time.perf_counter() - started)

    def _record(self, method: str, endpoint: str, status: str, duration: float) -> None:
        http_client_request_duration_seconds.labels(
            service=self.service, target=self.target, endpoint=endpoint, status=status
        ).observe(duration)
        duration_ms = round(duration * 1000, 1)
        healthy = status.isdigit() and (int(status) < 300 or 400 <= int(status) < 500)
        log.log(
            # The platform's own polls (QUIET_PATHS) run every second: their callers say what matters, once.
            logging.DEBUG if endpoint in QUIET_PATHS else logging.INFO if healthy else logging.WARNING,
            "%s %s %s -> %s in %.1f ms",
            self.target,
            method,
            endpoint,
            status,
            duration_ms,
            extra={
                "service": self.service,
                "target": self.target,
                "endpoint": endpoint,
                "method": method,
                "status": status,
                "duration_ms": duration_ms,
            },
        )
