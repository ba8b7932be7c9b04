"""Protocol compatibility with the official JS client (npm ``socket.io-client``, pinned in js/).

Needs Node.js and npm: the test fails (it does not skip) when they are missing, and installs the
locked client into ``tests/notification/js/node_modules`` when that folder is absent.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from roomee.notification.channels import NOTIFICATION_NEW, UNREAD_COUNTERS
from tests.notification.test_socket_server import running_socket
from tests.fixtures.fakes import FakeServiceContext
from tests.fixtures.platform import make_settings

JS_DIR = Path(__file__).parent / "js"


@pytest.fixture(scope="module")
def node() -> str:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("Node.js and npm are required for the Socket.IO JS compatibility test (install nodejs + npm)")
    if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            pytest.fail(f"npm install failed:\n{result.stdout}\n{result.stderr}")
    return node


class NodeClient:
    """``node js/client.mjs``, reading the JSON lines it prints."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, node: str, url: str, token: str | None, transport: str, count: int, *events: str):
        process = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / "client.mjs"),
            url,
            token or "-",
            transport,
            str(count),
            *events,
            cwd=JS_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def line(self, timeout: float = 15.0) -> dict:
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            stderr = await self.process.stderr.read()
            raise AssertionError(f"node client ended early: {stderr.decode()}")
        return json.loads(raw)

    async def finish(self, timeout: float = 15.0) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


@pytest.fixture
def ctx(tmp_path):
    return FakeServiceContext(make_settings(tmp_path, broker_url=None))


@pytest.mark.parametrize("transport", ["websocket", "default"])
async def test_official_js_client_connects_with_a_token_and_receives_notifications(node, ctx, transport):
    async with running_socket(ctx) as (url, server):
        client = await NodeClient.start(
            node, url, ctx.issue("m-js", "w-js"), transport, 2, NOTIFICATION_NEW, UNREAD_COUNTERS
        )
        try:
            connected = await client.line()
            assert connected["type"] == "connected", connected
            for _ in range(100):
                if server.member_sids("m-js"):
                    break
                await asyncio.sleep(0.05)
            assert len(server.member_sids("m-js")) == 1
            payload = {
                "id": "n-1",
                "type": "page.created",
                "title": "Nouvel article",
                "body": "Camille a publié « Planning de la semaine »",
                "data": {"pageId": "p-1", "workspaceId": "w-js"},
                "createdAt": "2026-01-05T09:30:00+00:00",
                "read": False,
            }
            await server.to_members(["m-js"], NOTIFICATION_NEW, payload)
            assert await client.line() == {"type": "event", "event": NOTIFICATION_NEW, "payload": payload}
            await server.to_workspace("w-js", UNREAD_COUNTERS, {"unread": 1})
            assert await client.line() == {"type": "event", "event": UNREAD_COUNTERS, "payload": {"unread": 1}}
            assert await client.finish() == 0
        finally:
            client.kill()


async def test_official_js_client_gets_connect_error_without_a_token(node, ctx):
    async with running_socket(ctx) as (url, _server):
        client = await NodeClient.start(node, url, None, "websocket", 1, NOTIFICATION_NEW)
        try:
            error = await client.line()
            assert error["type"] == "connect_error"
            assert error["message"].startswith("unauthorized")
            assert error["data"] == {"error": "unauthorized", "detail": "missing token"}
            assert await client.finish() == 2
        finally:
            client.kill()
