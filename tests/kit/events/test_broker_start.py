"""A broker that is not up yet when a process starts: the process listens at once, connects in the
background with backoff (one WARNING, then quiet retries, no traceback) and starts its relays and
consumers once the broker answers, instead of exiting or never listening."""

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
async def test_the_process_serves_while_it_waits_for_a_broker_that_is_down_at_start(tmp_path, caplog):
    late = LateBroker()
    n = next(fixtures._counter)
    settings = make_settings(
        tmp_path, broker_url=f"amqp://guest:guest@127.0.0.1:{late.port}/",
        exchange=f"roomee-test-{fixtures.RUN_ID}-{n}", queue_prefix=f"t{fixtures.RUN_ID}-{n}-",
    )
    caplog.set_level(logging.DEBUG, logger="roomee.platform")
    app = create_app(settings, targets.resolve("members"))
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None))
    serving = asyncio.create_task(server.serve())
    platform = app.state.platform
    try:
        import httpx

        while not server.started:
            assert not serving.done()
            await asyncio.sleep(0.05)
        while len([r for r in caplog.records if r.getMessage().startswith("connecting to the broker at start")]) < 2:
            await asyncio.sleep(0.1)  # attempts at 0 and 1 s
        async with httpx.AsyncClient(base_url=settings.base_url) as client:
            assert (await client.get("/health")).status_code == 200
            waiting = await client.get("/health/ready")
            # Ready (the outbox holds events), and saying what it waits for.
            assert waiting.status_code == 200, waiting.text
            assert waiting.json()["checks"]["broker"].startswith("unavailable: connecting")
            assert waiting.json()["checks"]["workers"] == "waiting for broker"
        attempts = [r for r in caplog.records if r.getMessage().startswith("connecting to the broker at start")]
        # Said once (WARNING, no traceback); the retries after it are quiet.
        assert [r.levelno for r in attempts][:2] == [logging.WARNING, logging.DEBUG] and not attempts[0].exc_info
        await late.open()
        await asyncio.wait_for(platform.wait_started(), 60)
        async with httpx.AsyncClient(base_url=settings.base_url) as client:
            ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["broker"] == "ok"
        assert ready.json()["checks"]["workers"] == "running"
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        await late.close()
