"""A broker that is not up yet when a process starts: the process waits with backoff (one WARNING
per attempt, no traceback) and starts once the broker answers, instead of exiting."""

from __future__ import annotations

import asyncio
import logging

import pytest
import uvicorn

from roomee import targets
from roomee.kit.app import create_app
from tests.fixtures import platform as fixtures
from tests.fixtures.platform import free_port, make_settings

RABBITMQ_PORT = 5672


class LateBroker:
    """A TCP port that refuses connections until ``open()``, then forwards to RabbitMQ."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: asyncio.Server | None = None

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def _forward(self, client_reader, client_writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", RABBITMQ_PORT)

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.mark.timeout(120)
async def test_the_process_waits_for_a_broker_that_is_down_at_start(tmp_path, caplog):
    late = LateBroker()
    n = next(fixtures._counter)
    settings = make_settings(
        tmp_path, broker_url=f"amqp://guest:guest@127.0.0.1:{late.port}/",
        exchange=f"roomee-test-{fixtures.RUN_ID}-{n}", queue_prefix=f"t{fixtures.RUN_ID}-{n}-",
    )
    caplog.set_level(logging.INFO)
    app = create_app(settings, targets.resolve("members"))
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None))
    serving = asyncio.create_task(server.serve())
    try:
        await asyncio.sleep(3.5)  # attempts at 0, 1 and 3 s
        assert not serving.done() and not server.started
        attempts = [r for r in caplog.records if r.getMessage().startswith("broker unreachable at start")]
        assert len(attempts) >= 2 and all(r.levelno == logging.WARNING and not r.exc_info for r in attempts)
        await late.open()
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started
        import httpx

        async with httpx.AsyncClient(base_url=settings.base_url) as client:
            ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["broker"] == "ok"
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        await late.close()
