"""Socket.IO delivery: every packet reaches each client once and in order, whatever path it takes
(written straight to the websocket, queued behind a slow client, long polling, polling upgraded to a
websocket), and an idle websocket connection holds no task of its own besides the ASGI server's.

The clients here speak engine.io/Socket.IO by hand (``websockets`` and ``httpx``), so the tests see
the frames and the handshake as they are sent.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack

import httpx
import pytest
import websockets.asyncio.client
import websockets.sync.client

from tests.fixtures.fakes import FakeServiceContext
from tests.fixtures.platform import make_settings
from tests.notification.test_socket_server import running_socket

SEP = "\x1e"  # engine.io's packet separator in a long-polling payload


@pytest.fixture
def ctx(tmp_path):
    return FakeServiceContext(make_settings(tmp_path, broker_url=None))


def ws_url(url: str, sid: str | None = None) -> str:
    return url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket" + (f"&sid={sid}" if sid else "")


def events(packets: list[str]) -> list:
    """The Socket.IO events among engine.io packets: ``42["name", payload]`` -> ``[name, payload]``."""
    return [json.loads(p[2:]) for p in packets if p.startswith("42")]


async def answer_pings(ws, packets: list[str], count: int, event: str = "seq") -> list:
    """Read from ``ws`` until ``count`` events named ``event`` arrived (answering pings); returns their payloads."""
    while len([e for e in events(packets) if e[0] == event]) < count:
        packet = await asyncio.wait_for(ws.recv(), 10)
        if packet == "2":
            await ws.send("3")
        packets.append(packet)
    return [e[1] for e in events(packets) if e[0] == event]


async def socketio_connect(ws, token: str) -> str:
    """The engine.io OPEN and Socket.IO CONNECT over a websocket; returns the Socket.IO sid."""
    assert (await ws.recv()).startswith("0{")
    await ws.send("40" + json.dumps({"token": token}))
    connected = await asyncio.wait_for(ws.recv(), 10)
    assert connected.startswith("40{"), connected
    return json.loads(connected[2:])["sid"]


async def polling_connect(http: httpx.AsyncClient, token: str) -> tuple[str, dict, str, list[str]]:
    """The engine.io OPEN and Socket.IO CONNECT over long polling: engine.io sid, the query of the
    next polls, the Socket.IO sid and the packets of the poll that brought the CONNECT."""
    opened = (await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})).text
    eio_sid = json.loads(opened[1:])["sid"]
    params = {"EIO": "4", "transport": "polling", "sid": eio_sid}
    assert (await http.post("/socket.io/", params=params, content="40" + json.dumps({"token": token}))).text == "OK"
    packets = (await http.get("/socket.io/", params=params)).text.split(SEP)
    assert packets[0].startswith("40{"), packets
    return eio_sid, params, json.loads(packets[0][2:])["sid"], packets


async def test_websocket_client_gets_broadcasts_and_direct_emits_in_order(ctx):
    async with running_socket(ctx) as (url, server):
        async with websockets.asyncio.client.connect(ws_url(url)) as ws:
            sid = await socketio_connect(ws, ctx.issue("m1", "w1"))
            for n in range(300):
                if n % 3 == 0:
                    await server.to_sid(sid, "seq", n)  # python-socketio's own send path
                elif n % 3 == 1:
                    await server.to_workspace("w1", "seq", n)  # the broadcast path
                else:
                    await server.to_members(["m1"], "seq", n)
            assert await answer_pings(ws, [], 300) == list(range(300))


async def test_a_slow_client_gets_everything_in_order_and_does_not_hold_up_the_others(ctx):
    big = "x" * 200_000  # 20 MB in all: more than the kernel's socket buffers hold
    async with running_socket(ctx) as (url, server):
        async with websockets.asyncio.client.connect(ws_url(url), max_size=None, max_queue=None) as slow, \
                websockets.asyncio.client.connect(ws_url(url), max_size=None, max_queue=None) as fast:
            await socketio_connect(slow, ctx.issue("slow", "w1"))
            await socketio_connect(fast, ctx.issue("fast", "w1"))
            slow.transport.pause_reading()  # the slow client stops reading: its socket buffers fill up
            for n in range(200):
                await server.to_workspace("w1", "seq", {"n": n, "pad": big if n % 2 == 0 else ""})
                if n % 10 == 0:
                    await server.to_members(["slow", "fast"], "seq", {"n": n, "pad": "", "direct": True})
            expected = [n for n in range(200) for _ in ((0, 1) if n % 10 == 0 else (0,))]
            # The fast client has everything while the slow one still reads nothing.
            assert [e["n"] for e in await answer_pings(fast, [], len(expected))] == expected
            slow_socket = next(s for s in server.sio.eio.sockets.values() if s.flusher is not None)
            assert not slow_socket.queue.empty()  # held back by the slow client, in order
            slow.transport.resume_reading()
            assert [e["n"] for e in await answer_pings(slow, [], len(expected))] == expected


async def test_long_polling_client_gets_every_packet_in_order(ctx):
    async with running_socket(ctx) as (url, server):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            _eio_sid, params, sid, _packets = await polling_connect(http, ctx.issue("m1", "w1"))
            for n in range(60):
                await (server.to_sid(sid, "seq", n) if n % 2 else server.to_workspace("w1", "seq", n))
            received: list[str] = []
            while len(events(received)) < 60:
                received += (await http.get("/socket.io/", params=params)).text.split(SEP)
            assert [e[1] for e in events(received)] == list(range(60))


async def test_polling_client_that_upgrades_gets_every_packet_once_in_order(ctx):
    async with running_socket(ctx) as (url, server):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            eio_sid, params, sid, polled = await polling_connect(http, ctx.issue("m1", "w1"))
            socket = server.sio.eio.sockets[eio_sid]

            async def emit(numbers):
                for n in numbers:
                    await (server.to_sid(sid, "seq", n) if n % 2 else server.to_workspace("w1", "seq", n))

            await emit(range(0, 10))
            polled += (await http.get("/socket.io/", params=params)).text.split(SEP)  # 0-9 over polling
            await emit(range(10, 15))  # waiting in the queue: no poll takes them before the upgrade
            async with websockets.asyncio.client.connect(ws_url(url, eio_sid)) as ws:
                await ws.send("2probe")
                assert await asyncio.wait_for(ws.recv(), 10) == "3probe"
                await emit(range(15, 20))  # during the upgrade
                polled += (await http.get("/socket.io/", params=params)).text.split(SEP)  # answered NOOP
                await emit(range(20, 25))  # after the last poll, before the upgrade completes
                await ws.send("5")
                for _ in range(100):
                    if socket.ws is not None:
                        break
                    await asyncio.sleep(0.02)
                await emit(range(25, 40))  # over the websocket
                over_ws = await answer_pings(ws, [], 40 - len(events(polled)))
            assert [e[1] for e in events(polled)] + over_ws == list(range(40))


def _open_raw_clients(url: str, tokens: list[str], stack: ExitStack) -> list:
    """Websocket clients connected from another thread (so they add no task to the server's loop)."""
    clients = []
    for token in tokens:
        client = stack.enter_context(websockets.sync.client.connect(ws_url(url)))  # offers permessage-deflate
        assert client.recv(10).startswith("0{")
        client.send("40" + json.dumps({"token": token}))
        assert client.recv(10).startswith("40{")
        clients.append(client)
    return clients


async def test_an_idle_websocket_connection_holds_no_task_of_its_own_and_no_compression(ctx):
    async with running_socket(ctx) as (url, server):
        # The first connection also starts engine.io's one service task (ping timeouts).
        stack = ExitStack()
        try:
            clients = await asyncio.to_thread(_open_raw_clients, url, [ctx.issue("m0", "w1")], stack)
            await asyncio.sleep(0.1)
            before = len(asyncio.all_tasks())
            clients += await asyncio.to_thread(
                _open_raw_clients, url, [ctx.issue(f"m{n}", "w1") for n in range(1, 6)], stack
            )
            for _ in range(100):
                if server.connected == 6:
                    break
                await asyncio.sleep(0.02)
            assert server.connected == 6
            # One task per connection: the ASGI server's, running the engine.io handler.
            assert len(asyncio.all_tasks()) - before == 5
            # permessage-deflate is declined (as Node's socket.io does): no zlib context per connection.
            assert [client.protocol.extensions for client in clients] == [[]] * 6
            await server.to_workspace("w1", "seq", 1)
            assert [json.loads((await asyncio.to_thread(c.recv, 10))[2:]) for c in clients] == [["seq", 1]] * 6
        finally:
            await asyncio.to_thread(stack.close)
        for _ in range(100):
            if server.connected == 0 and not server.sio.eio.sockets:
                break
            await asyncio.sleep(0.02)
        assert server.connected == 0 and server.sio.eio.sockets == {}


async def test_a_broadcast_is_written_to_every_socket_without_a_task_per_recipient(ctx):
    async with running_socket(ctx) as (url, server):
        stack = ExitStack()
        try:
            clients = await asyncio.to_thread(
                _open_raw_clients, url, [ctx.issue(f"m{n}", "w1") for n in range(5)], stack
            )
            loop = asyncio.get_running_loop()
            created = []

            def counting_factory(loop, coro, **kwargs):
                created.append(coro)
                return asyncio.Task(coro, loop=loop, **kwargs)

            loop.set_task_factory(counting_factory)
            try:
                await server.to_workspace("w1", "seq", 1)
                await server.to_members(["m0", "m3"], "seq", 2)
            finally:
                loop.set_task_factory(None)
            assert created == []

            def receive(client, count):
                return [json.loads(client.recv(10)[2:]) for _ in range(count)]

            received = [await asyncio.to_thread(receive, c, 2 if n in (0, 3) else 1) for n, c in enumerate(clients)]
            one, two = ["seq", 1], ["seq", 2]
            assert received == [[one, two], [one], [one], [one, two], [one]]
        finally:
            await asyncio.to_thread(stack.close)
