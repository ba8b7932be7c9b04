"""The notification Socket.IO server: JWT handshake, rooms, member and workspace emits, replicas."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import httpx
import pytest
import socketio
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from roomee.notification.channels import NOTIFICATION_NEW, Channels, build_channels
from roomee.notification.realtime.server import mount, socket_server
from tests.fixtures.fakes import FakeServiceContext, serve_asgi
from tests.fixtures.platform import AMQP_URL, BACKEND, make_settings


async def _hello(_request):
    return JSONResponse({"hello": "world"})


def _http_app() -> Starlette:
    return Starlette(routes=[Route("/hello", _hello)])


@asynccontextmanager
async def running_socket(ctx: FakeServiceContext):
    """The notification mount around a small HTTP app, served on a loopback port."""
    app = mount(_http_app(), ctx)
    try:
        async with serve_asgi(app) as url:
            yield url, ctx.state["socket"]
    finally:
        await ctx.teardown()


class Inbox:
    """A python-socketio AsyncClient that records what it receives."""

    def __init__(self, *events: str) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.received: dict[str, list] = {event: [] for event in events}
        self._arrived = asyncio.Event()
        for event in events:
            self.client.on(event, self._recorder(event))

    def _recorder(self, event):
        async def record(payload):
            self.received[event].append(payload)
            self._arrived.set()

        return record

    async def connect(self, url: str, *, transports=("websocket",), **kwargs) -> "Inbox":
        await self.client.connect(url, transports=list(transports), wait_timeout=10, **kwargs)
        return self

    async def wait(self, event: str, count: int = 1, timeout: float = 5.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.received[event]) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{event}: got {len(self.received[event])} of {count}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass
        return self.received[event]

    async def close(self) -> None:
        await self.client.disconnect()


@pytest.fixture
def ctx(tmp_path):
    return FakeServiceContext(make_settings(tmp_path, broker_url=None))


async def _refused(url: str, **kwargs) -> dict:
    """Connect, expect a refusal, and return the connect_error payload (message and data)."""
    client = socketio.AsyncClient(reconnection=False)
    errors: list = []

    async def on_error(data=None):
        errors.append(data)

    client.on("connect_error", on_error)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(url, transports=["websocket"], wait_timeout=10, **kwargs)
    await client.disconnect()
    assert len(errors) == 1, errors
    return errors[0]


async def test_connect_is_refused_without_a_valid_member_token(ctx):
    async with running_socket(ctx) as (url, server):
        missing = await _refused(url)
        assert missing["message"].startswith("unauthorized: a member token is required")
        assert missing["data"] == {"error": "unauthorized", "detail": "missing token"}

        garbage = await _refused(url, auth={"token": "not-a-jwt"})
        assert garbage["message"].startswith("unauthorized") and garbage["data"]["error"] == "invalid_token"

        bad_header = await _refused(url, headers={"Authorization": "Bearer x.y.z"})
        assert bad_header["data"]["error"] == "invalid_token"

        other_issuer = FakeServiceContext(make_settings(ctx.settings.data_dir / "elsewhere", broker_url=None))
        foreign = await _refused(url, auth={"token": other_issuer.issue("m1", "w1")})
        assert foreign["data"]["error"] == "invalid_token"  # signed by a key this platform does not know

        service = await _refused(url, auth={"token": ctx.service_token()})
        assert service["message"].startswith("forbidden") and service["data"]["error"] == "forbidden"
        assert server.connected == 0


async def test_token_from_auth_payload_header_or_query_joins_member_and_workspace_rooms(ctx):
    async with running_socket(ctx) as (url, server):
        by_auth = await Inbox().connect(url, auth={"token": ctx.issue("m1", "w1")})
        by_header = await Inbox().connect(url, headers={"Authorization": f"Bearer {ctx.issue('m2', 'w1')}"})
        by_query = await Inbox().connect(f"{url}?token={ctx.issue('m3', 'w2')}", transports=("polling", "websocket"))
        try:
            rooms = server.manager.rooms["/"]
            assert set(rooms["workspace:w1"]) == set(server.member_sids("m1")) | set(server.member_sids("m2"))
            assert set(rooms["workspace:w2"]) == set(server.member_sids("m3"))
            assert len(server.member_sids("m1")) == len(server.member_sids("m2")) == len(server.member_sids("m3")) == 1
            assert server.connected == 3
            # The HTTP app keeps being served beside Socket.IO.
            async with httpx.AsyncClient(base_url=url) as http:
                assert (await http.get("/hello")).json() == {"hello": "world"}
        finally:
            for inbox in (by_auth, by_header, by_query):
                await inbox.close()
        await asyncio.sleep(0.1)
        assert server.member_sids("m1") == [] and server.connected == 0


async def test_to_members_reaches_every_socket_of_those_members_only(ctx):
    async with running_socket(ctx) as (url, server):
        a1 = await Inbox(NOTIFICATION_NEW).connect(url, auth={"token": ctx.issue("a", "w1")})
        a2 = await Inbox(NOTIFICATION_NEW).connect(url, auth={"token": ctx.issue("a", "w1")})  # second device
        b = await Inbox(NOTIFICATION_NEW).connect(url, auth={"token": ctx.issue("b", "w1")})
        c = await Inbox(NOTIFICATION_NEW).connect(url, auth={"token": ctx.issue("c", "w1")})
        try:
            payload = {"id": "n1", "title": "Hello"}
            await server.to_members(["a", "b", "a"], NOTIFICATION_NEW, payload)
            assert await a1.wait(NOTIFICATION_NEW) == [payload]
            assert await a2.wait(NOTIFICATION_NEW) == [payload]
            assert await b.wait(NOTIFICATION_NEW) == [payload]
            await asyncio.sleep(0.2)
            assert c.received[NOTIFICATION_NEW] == []
            assert len(a1.received[NOTIFICATION_NEW]) == 1  # listed twice, delivered once
            await server.to_members([], NOTIFICATION_NEW, payload)  # nobody: no error
        finally:
            for inbox in (a1, a2, b, c):
                await inbox.close()


async def test_to_workspace_skips_the_given_members_and_stays_in_the_workspace(ctx):
    async with running_socket(ctx) as (url, server):
        author = await Inbox("comment:new").connect(url, auth={"token": ctx.issue("author", "w1")})
        author_tablet = await Inbox("comment:new").connect(url, auth={"token": ctx.issue("author", "w1")})
        colleague = await Inbox("comment:new").connect(url, auth={"token": ctx.issue("colleague", "w1")})
        other_hotel = await Inbox("comment:new").connect(url, auth={"token": ctx.issue("stranger", "w2")})
        try:
            payload = {"pageId": "p1", "commentCount": 3}
            await server.to_workspace("w1", "comment:new", payload, skip_member_ids=["author"])
            assert await colleague.wait("comment:new") == [payload]
            await server.to_workspace("w1", "comment:new", {"n": 2})
            assert await author.wait("comment:new") == [{"n": 2}]
            assert await author_tablet.wait("comment:new") == [{"n": 2}]
            assert await colleague.wait("comment:new", 2) == [payload, {"n": 2}]
            await asyncio.sleep(0.2)
            assert other_hotel.received["comment:new"] == []
        finally:
            for inbox in (author, author_tablet, colleague, other_hotel):
                await inbox.close()


async def test_connect_listener_can_greet_the_socket(ctx):
    async with running_socket(ctx) as (url, server):
        async def greet(sid, principal):
            await server.to_sid(sid, "notification:unread", {"memberId": principal.member_id, "unread": 4})

        server.on_member_connect(greet)
        inbox = Inbox("notification:unread")
        await inbox.connect(url, auth={"token": ctx.issue("m1", "w1")})
        try:
            assert await inbox.wait("notification:unread") == [{"memberId": "m1", "unread": 4}]
        finally:
            await inbox.close()


async def test_state_and_build_channels_share_one_server(ctx):
    server = socket_server(ctx)
    assert ctx.state["socket"] is server and ctx.state["sio"] is server.sio
    channels = build_channels(ctx)
    assert isinstance(channels, Channels)
    assert channels.socket is server
    assert build_channels(ctx) is channels
    assert channels.push.provider == "log" and channels.email.provider == "file"
    await ctx.teardown()  # closes the socket server and the providers


async def test_teardown_disconnects_clients(ctx):
    app = mount(_http_app(), ctx)
    async with serve_asgi(app) as url:
        inbox = await Inbox().connect(url, auth={"token": ctx.issue("m1", "w1")})
        await ctx.teardown()
        for _ in range(50):
            if not inbox.client.connected:
                break
            await asyncio.sleep(0.05)
        assert not inbox.client.connected
        await inbox.close()


@pytest.mark.skipif(BACKEND != "real", reason="replicas share rooms through RabbitMQ (ROOMEE_TEST_BACKEND=real)")
async def test_two_replicas_share_rooms_through_rabbitmq(tmp_path):
    import aio_pika

    settings = make_settings(tmp_path / "a", broker_url=AMQP_URL)
    ctx_a = FakeServiceContext(settings)
    # Replica B: same settings and signing keys (the same deployment), its own process state.
    ctx_b = FakeServiceContext(settings)
    async with running_socket(ctx_a) as (url_a, server_a), running_socket(ctx_b) as (url_b, server_b):
        assert server_a.manager is not server_b.manager
        author = await Inbox(NOTIFICATION_NEW, "comment:new").connect(url_b, auth={"token": ctx_a.issue("author", "w1")})
        on_b = await Inbox(NOTIFICATION_NEW, "comment:new").connect(url_b, auth={"token": ctx_a.issue("m-b", "w1")})
        on_a = await Inbox(NOTIFICATION_NEW, "comment:new").connect(url_a, auth={"token": ctx_a.issue("m-a", "w1")})
        try:
            # An emit on replica A reaches a client connected to replica B.
            await server_a.to_members(["m-b"], NOTIFICATION_NEW, {"id": "n1"})
            assert await on_b.wait(NOTIFICATION_NEW) == [{"id": "n1"}]
            # Several emits in one RabbitMQ message: each reaches its rooms on every replica, in
            # order, and the emitting replica's own clients get theirs once.
            await server_a.to_members_many(
                [(NOTIFICATION_NEW, {"id": "n2"}, ["m-b"]), (NOTIFICATION_NEW, {"id": "n3"}, ["m-a", "m-b"]),
                 (NOTIFICATION_NEW, {"id": "nobody"}, [])]
            )
            assert await on_b.wait(NOTIFICATION_NEW, 3) == [{"id": "n1"}, {"id": "n2"}, {"id": "n3"}]
            assert await on_a.wait(NOTIFICATION_NEW) == [{"id": "n3"}]
            await asyncio.sleep(0.2)
            assert on_a.received[NOTIFICATION_NEW] == [{"id": "n3"}]
            # The author's sockets are left out on every replica, not only on the emitting one.
            await server_a.to_workspace("w1", "comment:new", {"c": 1}, skip_member_ids=["author"])
            assert await on_b.wait("comment:new") == [{"c": 1}]
            assert await on_a.wait("comment:new") == [{"c": 1}]
            await asyncio.sleep(0.3)
            assert author.received["comment:new"] == []
            assert author.received[NOTIFICATION_NEW] == []
        finally:
            for inbox in (author, on_b, on_a):
                await inbox.close()
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.exchange_delete(f"{settings.exchange}-socketio-rooms")
    finally:
        await connection.close()
