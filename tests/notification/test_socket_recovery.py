"""Socket.IO connection state recovery with the stock Node socket.io-client 4: what a member missed
while the notification server was gone is replayed from the stored notifications, once, in order.

The server of the first connection and the one the client reconnects to are two distinct
``SocketServer`` instances (nothing in memory is shared, as after a restart or on another
replica) on the same port, over the platform's database; the kill -9 tests run ``roomee run --target
notification`` processes, the last one two of them behind one address (the client reconnects to the
replica that never saw it).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta

import aio_pika
import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect

from roomee.kit.clock import utcnow
from roomee.notification.realtime.recovery import offset_of
from roomee.notification.realtime.server import new_socket_server
from tests.fixtures.fakes import serve_asgi
from tests.fixtures.platform import AMQP_URL, BACKEND, free_port
from tests.kit.served import ROOMEE, environment
from tests.notification.support import event, inbox, publish, set_clock, team_platform, wait_handled
from tests.notification.test_socket_js_client import JS_DIR, node  # noqa: F401 (fixture)
from tests.notification.test_socket_protocol import opened, ws_url

MISSED = 20


@asynccontextmanager
async def socket_process(team, port: int):
    """A fresh notification Socket.IO server on ``port`` that the pipeline emits through, until the
    block ends (then its connections drop as a stopped process's do)."""
    ctx = team.ctx
    server = new_socket_server(ctx, broker_url=None)
    await server.start()
    ctx.state["channels"].socket = server
    config = uvicorn.Config(server.asgi_app(None), host="127.0.0.1", port=port, log_config=None,
                            lifespan="off", access_log=False)
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve())
    while not uv.started:
        assert not task.done(), "the Socket.IO server did not start"
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        uv.should_exit = True
        await task


class Recovering:
    """``node js/recovering.mjs``: a client with recovery on, reconnecting by itself."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, node_bin: str, url: str, token: str) -> "Recovering":
        process = await asyncio.create_subprocess_exec(
            node_bin, str(JS_DIR / "recovering.mjs"), url, token, cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def next(self, kind: str, timeout: float = 20.0) -> dict:
        """The next line of type ``kind`` (lines of other types are skipped, except events, which fail)."""
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            assert line, (await self.process.stderr.read()).decode()
            message = json.loads(line)
            if message["type"] == kind:
                return message
            assert message["type"] != "event", f"unexpected event while waiting for {kind}: {message}"

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def token_of(person) -> str:
    return person.headers["Authorization"].split(" ", 1)[1]


async def articles(team, count: int) -> list[dict]:
    """``count`` articles for the first member, published and stored."""
    member = team.members[0]
    envelopes = [event(team.admin, [member], payload={"id": f"page-{n}", "title": f"Article {n}"}) for n in range(count)]
    await publish(team.running, *envelopes)
    await wait_handled(team.running, *envelopes, timeout=30)
    return envelopes


@asynccontextmanager
async def connected_then_dropped(tmp_path, node_bin, **overrides):
    """A platform, a Node client that connected (one live notification received with its
    offset), and the server it connected to gone; yields (team, client, port)."""
    async with team_platform(tmp_path, members=1, **overrides) as team:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        async with socket_process(team, port):
            client = await Recovering.start(node_bin, url, token_of(team.members[0]))
            try:
                first = await client.next("connected")
                assert first["recovered"] is False  # a first connection has nothing to recover
                await articles(team, 1)
                live = await client.next("event")
                assert live["offset"], live  # asked for recovery: each notification:new carries its offset
            except BaseException:
                await client.stop()
                raise
        try:
            await client.next("disconnected")
            yield team, client, port
        finally:
            await client.stop()


async def test_missed_notifications_are_replayed_once_in_order_by_a_restarted_server(tmp_path, node):
    async with connected_then_dropped(tmp_path, node) as (team, client, port):
        await articles(team, MISSED)  # stored while no server holds the member's socket
        stored = [n["id"] for n in await inbox(team.client, team.members[0], limit=50)][:MISSED][::-1]
        async with socket_process(team, port):
            reconnected = await client.next("connected")
            replayed = [await client.next("event") for _ in range(MISSED)]
            assert reconnected["recovered"] is True
            assert [e["payload"]["id"] for e in replayed] == stored  # every one, once, oldest first
            # the stored order (time, then id) of the 20 articles of the gap, each once
            assert sorted(e["payload"]["data"]["title"] for e in replayed) == sorted(f"Article {n}" for n in range(MISSED))
            # nothing more arrives: one more article comes live, right after the replay
            await articles(team, 1)
            after = await client.next("event")
            assert after["payload"]["data"]["title"] == "Article 0" and after["payload"]["id"] not in stored
            print(f"recovery: {MISSED} notifications replayed, the last {replayed[-1]['at'] - reconnected['at']:.1f} ms "
                  "after the reconnect (client clock)")


async def test_a_gap_longer_than_the_window_is_not_recovered(tmp_path, node):
    async with connected_then_dropped(tmp_path, node, socket_recovery_window_seconds=60) as (team, client, port):
        await articles(team, 3)
        set_clock(team.running, utcnow() + timedelta(seconds=61))  # the missed ones are now older than the window
        async with socket_process(team, port):
            reconnected = await client.next("connected")
            assert reconnected["recovered"] is False  # the client refetches
            await articles(team, 1)  # still served live, on the new session
            assert (await client.next("event"))["offset"]


@pytest.mark.parametrize("auth", [{"pid": "forged", "offset": "x"}, {"pid": None}])
async def test_a_forged_or_foreign_pid_is_not_recovered(tmp_path, auth):
    async with team_platform(tmp_path, members=1) as team:
        server = new_socket_server(team.ctx, broker_url=None)
        resumed = await server.recovery.resume(await team.ctx.platform.verifier.principal(token_of(team.members[0])), auth)
        assert resumed.recovered is False and resumed.events == [] and resumed.pid != auth["pid"]
        admin = await team.ctx.platform.verifier.principal(token_of(team.admin))
        other = await server.recovery.resume(admin, {"pid": resumed.pid})  # another member's pid
        assert other.recovered is False and other.pid != resumed.pid



@contextmanager
def notification_process(team, port: int, log_file):
    """``roomee run --target notification`` on ``port``, over the platform's database and broker."""
    env = environment(team.running.settings, ROOMEE_PORT=str(port), ROOMEE_PUBLIC_URL=team.running.settings.base_url)
    with log_file.open("a") as output:
        process = subprocess.Popen([*ROOMEE, "run", "--target", "notification", "--port", str(port)],
                                   stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        if process.poll() is None:  # nothing to keep: stopped as the test stops it, at once
            process.kill()
        process.wait()


async def ready(url: str, process, log_file) -> None:
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_file.read_text()[-3000:]
            try:
                if (await http.get(f"{url}/health/ready", timeout=2)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_file.read_text()[-3000:]
            await asyncio.sleep(0.2)


async def test_missed_notifications_are_replayed_after_kill_9_of_the_notification_process(tmp_path, node):
    async with team_platform(tmp_path, members=1) as team:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_file = tmp_path / "notification.log"
        with notification_process(team, port, log_file) as process:
            await ready(url, process, log_file)
            client = await Recovering.start(node, url, token_of(team.members[0]))
            try:
                assert (await client.next("connected"))["recovered"] is False
                process.send_signal(signal.SIGKILL)
                process.wait()
                await client.next("disconnected")
                await articles(team, MISSED)  # stored by the platform's own notification consumer meanwhile
                stored = [n["id"] for n in await inbox(team.client, team.members[0], limit=50)][:MISSED][::-1]
                with notification_process(team, port, log_file) as restarted:
                    await ready(url, restarted, log_file)
                    reconnected = await client.next("connected", timeout=60)
                    replayed = [await client.next("event") for _ in range(MISSED)]
                    assert reconnected["recovered"] is True
                    assert [e["payload"]["id"] for e in replayed] == stored
            finally:
                await client.stop()


async def connect_with(ws, auth: dict) -> dict:
    """The engine.io OPEN and a Socket.IO CONNECT carrying ``auth``; the CONNECT answer."""
    await opened(ws)
    await ws.send("40" + json.dumps(auth))
    answer = await asyncio.wait_for(ws.recv(), 10)
    assert answer.startswith("40{"), answer
    return json.loads(answer[2:])


async def next_event(ws) -> list:
    while True:
        frame = await asyncio.wait_for(ws.recv(), 10)
        if frame.startswith("42"):
            return json.loads(frame[2:])


async def test_emits_while_the_replay_is_read_come_after_it_and_once(tmp_path):
    async with team_platform(tmp_path, members=1) as team:
        member = team.members[0]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        auth = {"token": token_of(member), "recovery": True}
        async with socket_process(team, port) as server:
            async with connect(ws_url(url)) as ws:
                pid = (await connect_with(ws, auth))["pid"]
            await articles(team, 3)  # while the member has no socket
            read = server.recovery.resume

            async def resume_amid_traffic(principal, payload):
                resumed = await read(principal, payload)
                # the pipeline emits meanwhile: a notification the replay carries, and a new socket-only update
                await server.to_members([member.member_id], "notification:new", resumed.events[-1][0])
                await server.to_members([member.member_id], "notification:new", {"id": None, "title": "live"})
                return resumed

            server.recovery.resume = resume_amid_traffic
            async with connect(ws_url(url)) as ws:
                answer = await connect_with(ws, {**auth, "pid": pid})
                assert answer["pid"] == pid  # recovered
                replayed = [await next_event(ws) for _ in range(3)]
                assert all(len(e) == 3 and e[2] == offset_of(e[1]) for e in replayed)  # with their offsets
                assert len({e[1]["id"] for e in replayed}) == 3
                assert await next_event(ws) == ["notification:new", {"id": None, "title": "live"}]
                await server.to_sid(answer["sid"], "marker", {})
                assert await next_event(ws) == ["marker", {}]  # the duplicate held back was not sent


@pytest.mark.skipif(BACKEND != "real", reason="replicas share rooms through RabbitMQ (ROOMEE_TEST_BACKEND=real)")
async def test_an_emit_from_another_replica_carries_the_offset_only_to_sockets_that_asked(tmp_path):
    async with team_platform(tmp_path, members=1) as team:
        member = team.members[0]
        # a second replica of the notification Socket.IO server, sharing rooms through RabbitMQ
        replica = new_socket_server(team.ctx, broker_url=team.running.settings.broker_url)
        try:
            await replica.start()
            async with serve_asgi(replica.asgi_app(None)) as url_b:
                async with connect(ws_url(url_b)) as asked, connect(ws_url(url_b)) as plain:
                    await connect_with(asked, {"token": token_of(member), "recovery": True})
                    await connect_with(plain, {"token": token_of(member)})
                    # stored and emitted by the platform's notification target (another replica)
                    await articles(team, 1)
                    event_name, payload, offset = await next_event(asked)
                    assert event_name == "notification:new" and payload["data"]["title"] == "Article 0"
                    assert offset == offset_of(payload)
                    assert await next_event(plain) == ["notification:new", payload]  # a Python client's one argument
        finally:
            await replica.close()
            connection = await aio_pika.connect(AMQP_URL)
            try:
                await (await connection.channel()).exchange_delete(f"{team.running.settings.exchange}-socketio-rooms")
            finally:
                await connection.close()


class Balancer:
    """A TCP load balancer in front of the notification replicas: new connections go to ``target``
    (a port), or are closed at once while it is None (no replica ready); a connection ends when
    either side does."""

    def __init__(self) -> None:
        self.target: int | None = None
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> "Balancer":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            if self.target is None:
                return
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
            except OSError:
                return
            try:
                await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
            finally:
                upstream_writer.close()
        finally:
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()  # one side ended: so does the other (a killed replica's connections drop)


async def test_missed_notifications_are_replayed_by_another_replica_after_kill_9(tmp_path, node):
    """Two notification processes on the platform's database (and broker); the client reaches them
    through one address, as through the Service. Replica 1 is killed, the articles of the gap are
    stored while no replica takes the client, and replica 2, which never saw the client, replays them."""
    async with team_platform(tmp_path, members=1) as team, Balancer() as balancer:
        ports = free_port(), free_port()
        logs = tmp_path / "replica-1.log", tmp_path / "replica-2.log"
        with notification_process(team, ports[0], logs[0]) as first, \
                notification_process(team, ports[1], logs[1]) as second:
            await ready(f"http://127.0.0.1:{ports[0]}", first, logs[0])
            await ready(f"http://127.0.0.1:{ports[1]}", second, logs[1])
            balancer.target = ports[0]
            client = await Recovering.start(node, balancer.url, token_of(team.members[0]))
            try:
                assert (await client.next("connected"))["recovered"] is False
                live_ids = []
                if BACKEND == "real":  # a live one first (emits cross processes through RabbitMQ only)
                    await articles(team, 1)
                    live = await client.next("event")
                    assert live["offset"] == offset_of(live["payload"])
                    live_ids.append(live["payload"]["id"])
                balancer.target = None  # replica 1 is gone; replica 2 is not in rotation yet
                first.send_signal(signal.SIGKILL)
                first.wait()
                await client.next("disconnected")
                await articles(team, MISSED)
                stored = [n["id"] for n in await inbox(team.client, team.members[0], limit=50)][:MISSED][::-1]
                assert not set(live_ids) & set(stored)
                balancer.target = ports[1]
                reconnected = await client.next("connected", timeout=60)
                replayed = [await client.next("event") for _ in range(MISSED)]
                assert reconnected["recovered"] is True
                assert [e["payload"]["id"] for e in replayed] == stored  # every one, once, oldest first
                assert all(e["offset"] == offset_of(e["payload"]) for e in replayed)
                if BACKEND == "real":
                    # live again on replica 2 (whichever replica consumed the event: fan-out by room),
                    # and nothing of the gap a second time
                    await articles(team, 1)
                    after = await client.next("event")
                    assert after["payload"]["id"] not in [*stored, *live_ids]
            finally:
                await client.stop()
