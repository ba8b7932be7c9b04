"""What the Socket.IO websocket fast path (roomee.notification.realtime.transport) relies on in
uvicorn, websockets and python-engineio beyond their public interfaces: the pinned versions, the
protocol class uvicorn serves websockets with, the connection attributes the transport reads and
writes, and one exchange through the real server where the frames take the fast path.

A uvicorn (or websockets, python-engineio) upgrade that changes any of these fails here.
"""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import engineio
import engineio.async_socket
import pytest
import websockets.asyncio.client
import websockets.protocol
from uvicorn.config import WS_PROTOCOLS
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

from roomee.notification.realtime import transport
from tests.fixtures.fakes import FakeServiceContext
from tests.fixtures.platform import make_settings
from tests.notification.test_socket_delivery import socketio_connect, ws_url
from tests.notification.test_socket_server import running_socket

ROOT = Path(__file__).resolve().parents[2]
# The versions the transport was checked against; a new one is checked (this file) before it is pinned.
CHECKED = {"uvicorn": "0.54.0", "websockets": "17.4", "python-engineio": "4.15.1", "python-socketio": "5.18.1"}


@pytest.fixture
def ctx(tmp_path):
    return FakeServiceContext(make_settings(tmp_path, broker_url=None))


def test_the_servers_the_fast_path_was_checked_against_are_the_pinned_and_installed_ones():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {}
    for requirement in dependencies:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?==([^;\s]+)", requirement.strip())
        if match:
            pinned[match.group(1)] = match.group(3)
    for package, checked in CHECKED.items():
        assert pinned.get(package) == checked, f"{package} must stay pinned to {checked} (see realtime/transport.py)"
        assert version(package) == checked, f"{package} {version(package)} installed, the transport was checked with {checked}"


def test_uvicorn_serves_websockets_with_the_protocol_the_transport_writes_to():
    assert transport.SansIOProtocol is not None
    # `roomee run` leaves uvicorn's ws option at "auto": that must be the sans-I/O protocol.
    assert AutoWebSocketsProtocol is transport.SansIOProtocol
    assert WS_PROTOCOLS["websockets-sansio"].endswith(":WebSocketsSansIOProtocol")
    # engine.io internals the transport's socket and server override or call
    for name in ("_websocket_handler", "check_ping_timeout", "schedule_ping", "receive", "close", "send"):
        assert callable(getattr(engineio.async_socket.AsyncSocket, name, None)), name
    assert "websocket" in engineio.AsyncServer(async_mode="asgi")._async
    assert websockets.protocol.State.OPEN


async def test_a_websocket_exchange_through_the_real_server_takes_the_fast_path(ctx):
    async with running_socket(ctx) as (url, server):
        async with websockets.asyncio.client.connect(ws_url(url)) as client:
            sid = await socketio_connect(client, ctx.issue("m1", "w1"))
            eio_sid = server.manager.eio_sid_from_sid(sid, "/")
            socket = server.sio.eio.sockets[eio_sid]
            assert isinstance(socket, transport.Socket)
            connection = socket.ws.connection
            # the ASGI send was a bound method of uvicorn's sans-I/O protocol: the fast path is on
            assert isinstance(connection, transport.SansIOProtocol)
            for name in transport.PROTOCOL_ATTRIBUTES:
                assert hasattr(connection, name), f"uvicorn's protocol lost {name!r}"
            assert connection.handshake_complete is True
            assert isinstance(connection.writable, asyncio.Event) and connection.writable.is_set()
            assert isinstance(connection.conn, websockets.protocol.Protocol)
            assert connection.conn.state is websockets.protocol.State.OPEN and connection.conn.extensions == []
            assert "Sec-WebSocket-Extensions" not in connection.response.headers
            assert connection.close_sent is False and connection.disconnected is False
            assert callable(connection.transport.write) and connection.transport.is_closing() is False
            # a frame written straight to the connection reaches the client as a text message
            assert socket.ws.write(transport.websocket_frame('42["direct",1]')) is True
            assert await asyncio.wait_for(client.recv(), 10) == '42["direct",1]'
            # and an emit through the server's manager is written the same way, without a flush task
            await server.to_members(["m1"], "seq", {"n": 2})
            assert socket.flusher is None
            assert json.loads((await asyncio.wait_for(client.recv(), 10))[2:]) == ["seq", {"n": 2}]
            # an engine.io ping written the same way, answered by the client, keeps the socket open
            assert socket.ws.write(transport.websocket_frame("2")) is True
            assert await asyncio.wait_for(client.recv(), 10) == "2"
            await client.send("3")
            await server.to_members(["m1"], "seq", {"n": 3})
            assert json.loads((await asyncio.wait_for(client.recv(), 10))[2:]) == ["seq", {"n": 3}]
