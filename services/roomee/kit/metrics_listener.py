"""``/metrics`` on a port of its own (``ROOMEE_METRICS_PORT``), so the API port, which the Ingress
exposes, does not serve it: a second tiny HTTP listener in the same process, for Prometheus only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("roomee.metrics")
_MAX_HEAD = 16 * 1024
_READ_TIMEOUT = 10.0


def _answer(status: str, content_type: str, body: bytes) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
        method, _, rest = head[:_MAX_HEAD].partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if path != b"/metrics":
            writer.write(_answer("404 Not Found", "text/plain", b"only /metrics here\n"))
        elif method not in (b"GET", b"HEAD"):
            writer.write(_answer("405 Method Not Allowed", "text/plain", b"GET /metrics\n"))
        else:
            body = generate_latest()
            answer = _answer("200 OK", CONTENT_TYPE_LATEST, body)
            writer.write(answer if method == b"GET" else answer[: len(answer) - len(body)])
        await writer.drain()
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


def with_metrics_listener(lifespan: Callable, host: str, port: int) -> Callable:
    """``lifespan`` with the metrics listener open around it (from before start-up to after shutdown)."""

    @asynccontextmanager
    async def serving(app) -> AbstractAsyncContextManager:
        server = await asyncio.start_server(_handle, host, port, limit=_MAX_HEAD)
        log.info("metrics on %s:%s/metrics", host, port)
        try:
            async with lifespan(app) as state:
                yield state
        finally:
            server.close()
            await server.wait_closed()

    return serving
