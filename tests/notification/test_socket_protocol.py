"""The Socket.IO transport against the engine.io v4 / Socket.IO v5 protocols, with raw websocket
frames (the cases of the public engine.io-protocol and socket.io-protocol test suites that apply
to a server with authentication)."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fixtures.fakes import FakeServiceContext
from tests.fixtures.platform import make_settings
from tests.notification.test_socket_server import running_socket

# Generous bound for "the server closed the connection" (never a timing assertion: a broken
# server keeps the connection open for ever, a working one closes it in milliseconds).
CLOSED_WITHIN = 10.0


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"


async def opened(ws) -> dict:
    """The engine.io OPEN packet's handshake data."""
    first = await asyncio.wait_for(ws.recv(), CLOSED_WITHIN)
    assert first[0] == "0", first
    return json.loads(first[1:])


async def closed(ws) -> bool:
    """True once the server closed the connection, answering pings meanwhile only if told."""
    try:
        async with asyncio.timeout(CLOSED_WITHIN):
            while True:
                await ws.recv()
    except ConnectionClosed:
        return True
    except TimeoutError:
        return False


async def connected(ws, token: str) -> dict:
    await ws.send("40" + json.dumps({"token": token}))
    answer = await asyncio.wait_for(ws.recv(), CLOSED_WITHIN)
    assert answer.startswith("40{"), answer
    return json.loads(answer[2:])


@asynccontextmanager
async def member_socket(ctx, url: str):
    """A raw websocket through the engine.io handshake and the Socket.IO CONNECT of member m1."""
    async with connect(ws_url(url)) as ws:
        await opened(ws)
        await connected(ws, ctx.issue("m1", "w1"))
        yield ws


@pytest.fixture
def ctx(tmp_path):
    return FakeServiceContext(make_settings(tmp_path, broker_url=None))


# Malformed engine.io packets (unknown type, empty) end the session; so do invalid Socket.IO
# packets (undecodable, unknown type, bad JSON, a binary attachment with no binary packet).
@pytest.mark.parametrize("frame", [
    "not a packet", "9", "", "4garbage", "42[", "4" + "9", "43not-json", b"\x00\x01",
])
async def test_an_invalid_packet_closes_the_connection(ctx, frame):
    async with running_socket(ctx) as (url, server):
        async with member_socket(ctx, url) as ws:
            await ws.send(frame)
            assert await closed(ws)
        assert server.connected == 0


async def test_a_connect_payload_that_is_not_an_object_closes_the_connection(ctx):
    async with running_socket(ctx) as (url, _server):
        async with connect(ws_url(url)) as ws:
            await opened(ws)
            await ws.send('40"a string"')
            assert await closed(ws)


async def test_an_unknown_namespace_is_refused_with_a_message_object(ctx):
    async with running_socket(ctx) as (url, _server):
        async with connect(ws_url(url)) as ws:
            await opened(ws)
            await ws.send("40/random," + json.dumps({"token": ctx.issue("m1", "w1")}))
            answer = await asyncio.wait_for(ws.recv(), CLOSED_WITHIN)
            assert answer.startswith("44/random,"), answer
            assert json.loads(answer[len("44/random,"):]) == {"message": "Invalid namespace"}


async def test_connect_is_acknowledged_before_any_event(ctx):
    async with running_socket(ctx) as (url, server):
        async def greet(sid, principal):
            await server.to_sid(sid, "notification:unread", {"workspaceId": principal.workspace_id, "unread": 3})

        server.on_member_connect(greet)
        async with connect(ws_url(url)) as ws:
            await opened(ws)
            await ws.send("40" + json.dumps({"token": ctx.issue("m1", "w1")}))
            first = await asyncio.wait_for(ws.recv(), CLOSED_WITHIN)
            second = await asyncio.wait_for(ws.recv(), CLOSED_WITHIN)
            assert first.startswith("40{") and "sid" in json.loads(first[2:])
            assert json.loads(second[2:]) == ["notification:unread", {"workspaceId": "w1", "unread": 3}]


async def test_ping_interval_and_timeout_come_from_the_settings(tmp_path):
    ctx = FakeServiceContext(make_settings(
        tmp_path, broker_url=None, socket_ping_interval_seconds=7, socket_ping_timeout_seconds=4))
    async with running_socket(ctx) as (url, _server):
        async with connect(ws_url(url)) as ws:
            handshake = await opened(ws)
            assert handshake["pingInterval"] == 7000 and handshake["pingTimeout"] == 4000


def pinging_often(tmp_path) -> FakeServiceContext:
    """Settings with 1 s pings (engine.io advertises whole seconds) and a 1 s timeout."""
    return FakeServiceContext(make_settings(
        tmp_path, broker_url=None, socket_ping_interval_seconds=1, socket_ping_timeout_seconds=1))


async def test_a_client_that_sends_but_never_answers_a_ping_is_closed(tmp_path):
    ctx = pinging_often(tmp_path)
    async with running_socket(ctx) as (url, server):
        async with member_socket(ctx, url) as ws:
            pings = 0

            async def chatter():  # frames that are not pongs, every 50 ms
                while True:
                    await ws.send('42["typing",{}]')
                    await asyncio.sleep(0.05)

            sender = asyncio.ensure_future(chatter())
            try:
                async with asyncio.timeout(CLOSED_WITHIN):
                    while True:
                        message = await ws.recv()
                        pings += message == "2"
            except ConnectionClosed:
                pass
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            assert pings >= 1
            assert ws.state.name == "CLOSED"
        assert server.connected == 0


async def test_a_client_that_answers_pings_stays_connected(tmp_path):
    ctx = pinging_often(tmp_path)
    async with running_socket(ctx) as (url, server):
        async with member_socket(ctx, url) as ws:
            pings = 0
            while pings < 3:  # past interval + timeout
                message = await asyncio.wait_for(ws.recv(), CLOSED_WITHIN)
                if message == "2":
                    pings += 1
                    await ws.send("3")
            assert server.connected == 1
