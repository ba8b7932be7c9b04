"""The Socket.IO server of the notification target (seed Flow 6, "socket" channel).

One python-socketio ``AsyncServer`` (ASGI mode) is served by the notification target on the
same port as its HTTP routes: the target's ``mount`` hook wraps the platform's ASGI app with
``socketio.ASGIApp`` at ``/socket.io``.

Authentication: the platform JWT, from the Socket.IO ``auth`` payload (``{"token": "..."}``),
an ``Authorization: Bearer`` header, or a ``?token=`` query parameter, in that order. A
connection without a valid *member* token is refused (``connect_error`` with a message and
``{"error": code, "detail": ...}`` as data, the platform's error model). An accepted socket joins
``workspace:{workspaceId}`` and ``member:{memberId}``.

Several replicas: with ``settings.broker_url`` set, the server uses ``AsyncAioPikaManager``
(a fanout exchange ``{exchange}-socketio`` on RabbitMQ), so an emit on one replica reaches the
sockets of every replica.

Leaving members out of a workspace broadcast (``to_workspace(..., skip_member_ids=...)``):
``skip_sid`` takes socket ids, but a replica only knows the sids of its own sockets, so sids
resolved on the emitting replica would not skip the author's sockets on another one. The emit
therefore carries the member rooms (``member:{id}``) to leave out, and the client manager of
every replica (:class:`_MemberRoomSkip`) turns them into the sids of its own sockets in those
rooms just before sending. The member -> sids map is the manager's room registry, which
python-socketio keeps up to date on connect and disconnect (:meth:`SocketServer.member_sids`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs

import aio_pika
import engineio
import engineio.async_drivers.asgi
import engineio.async_socket
import engineio.exceptions
import engineio.packet
import socketio
import socketio.packet
from prometheus_client import Gauge
from socketio.async_aiopika_manager import AsyncAioPikaManager
from socketio.async_manager import AsyncManager
from websockets.frames import Frame, Opcode
from websockets.protocol import State as WebSocketState

from roomee.kit.auth import Principal
from roomee.kit.errors import RoomeeError
from roomee.notification import clock
from roomee.notification.hooks import cancelled_from_outside
from roomee.notification.realtime.recovery import OFFSET_EVENT, Recovery, Resumed, offset_of
from roomee.notification.realtime.recovery import requested as recovery_requested

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol as _SansIOProtocol
except ImportError:  # another ASGI server (or uvicorn without websockets): no direct writes
    _SansIOProtocol = None

log = logging.getLogger("roomee.notification.socket")

SOCKETIO_PATH = "socket.io"
MEMBER_ROOM_PREFIX = "member:"
WORKSPACE_ROOM_PREFIX = "workspace:"
# How long start() waits for the RabbitMQ listener of the shared manager to be bound (a bound queue takes
# a few tens of ms): short, since the process listens (answers /health) only after it.
LISTENER_READY_TIMEOUT_SECONDS = 1.0
# Messages the shared manager's listener takes before acknowledging (python-socketio: 1).
LISTENER_PREFETCH = 256
# Emits carried by one RabbitMQ message of ``emit_many``.
EMITS_PER_MESSAGE = 500
# How long a fan-out publish keeps retrying through a broker outage before the emit counts as failed.
PUBLISH_RETRY_SECONDS = 120.0


class SocketPublishFailed(Exception):
    """The emit could not reach the other replicas (the broker stayed unreachable)."""

# One emit: event name, its arguments (a payload, and an offset for notification:new), target rooms.
Emit = tuple[str, list[Any], list[str]]

socketio_connected_clients = Gauge(
    "socketio_connected_clients",
    "Socket.IO clients connected to this process.",
    ["service"],
)

ConnectListener = Callable[[str, Principal], Awaitable[None]]


def member_room(member_id: str) -> str:
    return f"{MEMBER_ROOM_PREFIX}{member_id}"


def workspace_room(workspace_id: str) -> str:
    return f"{WORKSPACE_ROOM_PREFIX}{workspace_id}"


def _frame(message: str | bytes) -> bytes:
    """A server's (unmasked, uncompressed) websocket frame carrying one engine.io packet."""
    if isinstance(message, str):
        return Frame(Opcode.TEXT, message.encode()).serialize(mask=False)
    return Frame(Opcode.BINARY, message).serialize(mask=False)


class _WebSocket(engineio.async_drivers.asgi.WebSocket):
    """engine.io's ASGI websocket, plus a write that skips the ASGI ``send`` round trip.

    Under uvicorn's websockets (sans-I/O) protocol, :meth:`write` puts a frame framed once per
    broadcast straight on the connection's transport, as Node's socket.io does. Only when the
    connection is open, its transport takes writes without pushing back (below the high-water
    mark) and no extension changes frames; otherwise the caller queues the packet and the ASGI
    ``send`` takes it, as before. Under any other ASGI server, :meth:`write` always declines.

    permessage-deflate, which browsers and the Node client offer, is declined at the handshake
    (Node's socket.io declines it by default too): it would compress each message once per
    client and hold two zlib contexts (tens of kB) per connection.
    """

    def __init__(self, handler, server) -> None:
        super().__init__(handler, server)
        self.connection: Any = None

    async def __call__(self, environ):
        self.asgi_receive = environ["asgi.receive"]
        self.asgi_send = environ["asgi.send"]
        connection = getattr(self.asgi_send, "__self__", None)
        if _SansIOProtocol is not None and isinstance(connection, _SansIOProtocol) \
                and not connection.handshake_complete:
            if connection.conn.extensions:
                connection.conn.extensions = []
                del connection.response.headers["Sec-WebSocket-Extensions"]
            self.connection = connection
        await self.asgi_send({"type": "websocket.accept"})
        await self.handler(self)
        return ""

    def write(self, frame: bytes) -> bool:
        """Write ``frame`` to the connection now; False when it must go through :meth:`send`."""
        connection = self.connection
        if (connection is None or connection.close_sent or connection.disconnected
                or not connection.writable.is_set() or connection.conn.extensions
                or connection.conn.state is not WebSocketState.OPEN or connection.transport.is_closing()):
            return False
        connection.transport.write(frame)
        return True


class _Socket(engineio.async_socket.AsyncSocket):
    """An engine.io socket without a task of its own while idle.

    engine.io's socket keeps a writer task per websocket connection (waiting on its queue), a
    task per received message and a sleeping task per ping interval. Here, on the websocket
    transport, a packet is written to the connection at once (:meth:`deliver`) when nothing is
    waiting before it; the queue and a flush task are used only while the connection pushes
    back (or, with another ASGI server, for every packet). Pings are timer callbacks. Long
    polling and the upgrade from it are engine.io's own, on the same queue.
    """

    ws: _WebSocket | None = None
    flusher: asyncio.Task | None = None
    ping_timer: asyncio.TimerHandle | None = None
    # Loop time by which the client must have answered a ping (interval + timeout after the last
    # pong, or after the websocket opened); only a pong moves it, not other frames.
    pong_deadline: float = 0.0

    def _arm_pong_deadline(self) -> None:
        self.pong_deadline = asyncio.get_running_loop().time() + self.server.ping_interval + self.server.ping_timeout

    def deliver(self, pkt: engineio.packet.Packet, frame: bytes | None = None) -> None:
        """Send ``pkt`` after every packet sent or queued before it (``frame``: its encoding)."""
        if self.closed:
            return
        ws = self.ws
        if ws is not None and self.flusher is None and self.queue.empty() \
                and ws.write(frame if frame is not None else _frame(pkt.encode())):
            return
        self.queue.put_nowait(pkt)
        if ws is not None and self.flusher is None:
            self.flusher = asyncio.ensure_future(self._flush(ws))

    async def _flush(self, ws: _WebSocket) -> None:
        """Send what the queue holds, in order, through the ASGI ``send`` (which waits while the
        client is slow); ends when the queue is empty, so an idle socket has no task."""
        try:
            while not self.queue.empty():
                pkt = self.queue.get_nowait()
                try:
                    if pkt is not None:
                        await ws.send(pkt.encode())
                except Exception:  # the connection is gone; so are the packets for it
                    self._discard_queue()
                    return
                finally:
                    self.queue.task_done()
        finally:
            self.flusher = None

    def _discard_queue(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
            self.queue.task_done()

    async def send(self, pkt):
        if not await self.check_ping_timeout():
            return
        self.deliver(pkt)

    def schedule_ping(self):
        self._arm_pong_deadline()
        if self.last_ping:
            self.last_ping = None
            self.ping_timer = asyncio.get_running_loop().call_later(self.server.ping_interval, self._ping)

    def _ping(self) -> None:
        self.ping_timer = None
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.deliver(engineio.packet.Packet(engineio.packet.PING))

    async def close(self, wait=True, abort=False, reason=None):
        if self.ping_timer is not None:
            self.ping_timer.cancel()
            self.ping_timer = None
        was_open = not self.closed and not self.closing
        await super().close(wait=wait, abort=abort, reason=reason)
        ws = self.ws
        if was_open and not abort and ws is not None:
            # Closed by the server (a disconnect, an invalid packet): after the CLOSE packet the
            # transport closes too, so a client that ignores CLOSE is not left holding it.
            flusher = self.flusher
            if flusher is not None:
                await asyncio.gather(flusher, return_exceptions=True)
            await ws.close()

    async def _websocket_handler(self, ws):
        max_size = self.server.max_http_buffer_size

        async def receive():
            data = await ws.wait()
            if data and len(data) > max_size:
                raise ValueError("packet is too large")
            return data

        if self.connected:  # an upgrade from long polling (engine.io's own steps)
            self.upgrading = True  # the poll answers NOOP from now on
            try:
                probe = engineio.packet.Packet(encoded_packet=await receive())
            except (OSError, ValueError):
                self.upgrading = False
                return
            if probe.packet_type != engineio.packet.PING or probe.data != "probe":
                self.upgrading = False
                return
            await ws.send(engineio.packet.Packet(engineio.packet.PONG, data="probe").encode())
            self.queue.put_nowait(engineio.packet.Packet(engineio.packet.NOOP))  # ends the pending poll
            try:
                upgrade = engineio.packet.Packet(encoded_packet=await receive())
            except (OSError, ValueError):
                self.upgrading = False
                return
            if upgrade.packet_type != engineio.packet.UPGRADE:
                self.upgrading = False
                return
            self.upgraded = True
            self.upgrading = False
        else:
            self.connected = True
            self.upgraded = True
        # From here packets go over the websocket, after those still queued (the OPEN packet,
        # or what came during the upgrade).
        self.ws = ws
        if not self.queue.empty() and self.flusher is None:
            self.flusher = asyncio.ensure_future(self._flush(ws))
        self._arm_pong_deadline()
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    # The deadline is not re-armed by frames other than a pong: a client that
                    # sends but never answers a ping is closed after interval + timeout.
                    async with asyncio.timeout_at(self.pong_deadline):
                        data = await receive()
                except (TimeoutError, OSError, ValueError):
                    break
                if data is None:
                    break
                try:
                    pkt = engineio.packet.Packet(encoded_packet=data)
                    if not 0 <= pkt.packet_type < len(engineio.packet.packet_names):
                        raise ValueError(f"unknown packet type {pkt.packet_type}")
                except Exception:  # a malformed engine.io packet ends the session (as engine.io's reference server does)
                    log.info("socket %s closed: malformed engine.io packet", self.sid)
                    break
                if loop.time() >= self.pong_deadline and pkt.packet_type != engineio.packet.PONG:
                    break
                try:
                    await self.receive(pkt)
                except engineio.exceptions.UnknownPacketError:  # a packet type a client must not send
                    log.info("socket %s closed: unexpected engine.io packet type", self.sid)
                    break
                except engineio.exceptions.SocketIsClosedError:
                    break
                except Exception:
                    self.server.logger.exception("Unknown receive error")
        finally:
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
            flusher = self.flusher
            if flusher is not None:
                flusher.cancel()
                await asyncio.gather(flusher, return_exceptions=True)
            self._discard_queue()
            await ws.close()


class _EngineIOServer(engineio.AsyncServer):
    """engine.io's server with :class:`_Socket` sockets and the :class:`_WebSocket` driver."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._async = dict(self._async, websocket=_WebSocket)

    async def _trigger_event(self, event, *args, **kwargs):
        if event == "connect":
            # engine.io creates its own socket class; the socket is new, only its OPEN packet is queued.
            socket = self.sockets.get(args[0])
            if socket is not None and type(socket) is engineio.async_socket.AsyncSocket:
                socket.__class__ = _Socket
        return await super()._trigger_event(event, *args, **kwargs)


class Accepted:
    """What a connect handler returns to accept a socket: ``answer`` goes into the CONNECT
    packet beside ``sid`` (e.g. ``pid``), ``after`` runs once the CONNECT was sent (events the
    socket is due come after the acknowledgement, never before it)."""

    def __init__(self, answer: dict[str, Any] | None = None, after: Callable[[], Awaitable[None]] | None = None) -> None:
        self.answer = answer or {}
        self.after = after


class _AsyncServer(socketio.AsyncServer):
    """python-socketio's server with the protocol v5 points it leaves out: an unknown namespace's
    CONNECT_ERROR carries ``{message}``, a packet that is not valid Socket.IO closes the
    connection, and nothing is sent to a socket before its CONNECT acknowledgement."""

    def _engineio_server_class(self):
        return _EngineIOServer

    async def _handle_eio_message(self, eio_sid, data):
        try:
            if isinstance(data, bytes) and eio_sid not in self._binary_packet:
                raise ValueError("binary attachment without a binary packet")
            await super()._handle_eio_message(eio_sid, data)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            log.info("socket %s closed: invalid Socket.IO packet (%s)", eio_sid, exc)
            await self.eio.disconnect(eio_sid)

    async def _handle_connect(self, eio_sid, namespace, data):
        namespace = namespace or "/"
        sid = None
        if namespace in self.handlers or namespace in self.namespace_handlers \
                or self.namespaces == "*" or namespace in self.namespaces:
            sid = await self.manager.pre_connect(eio_sid, namespace)
        if sid is None:
            await self._send_packet(eio_sid, self.packet_class(
                socketio.packet.CONNECT_ERROR, data={"message": "Invalid namespace"}, namespace=namespace))
            return
        if data is not None and not isinstance(data, dict):
            # protocol v5: the CONNECT payload is an object (or absent)
            await self.manager.disconnect(sid, namespace, ignore_queue=True)
            raise ValueError("CONNECT payload is not an object")
        fail_reason: Any = {"message": "Connection refused by server"}
        try:
            result = await self._trigger_event("connect", namespace, sid, self.environ[eio_sid], data)
        except socketio.exceptions.ConnectionRefusedError as exc:
            result, fail_reason = False, exc.error_args
        if result is False:
            await self._send_packet(eio_sid, self.packet_class(
                socketio.packet.CONNECT_ERROR, data=fail_reason, namespace=namespace))
            await self.manager.disconnect(sid, namespace, ignore_queue=True)
            return
        answer = result if isinstance(result, Accepted) else Accepted()
        await self._send_packet(eio_sid, self.packet_class(
            socketio.packet.CONNECT, {**answer.answer, "sid": sid}, namespace=namespace))
        await self.manager.connect(sid, namespace)
        if answer.after is not None:
            await answer.after()


class _MemberRoomSkip(AsyncManager):
    """Expands ``member:{id}`` entries of ``skip_sid`` into this replica's sids in that room.

    Sits right below the pub/sub layer in the MRO, so the expansion runs on every replica when
    it delivers an emit to its own sockets.

    Also the per-socket side of connection state recovery (:mod:`.realtime.recovery`): sockets in
    ``offsets`` get ``notification:new`` with its offset as last argument, the others without it;
    while a socket is in ``recovering`` (between its CONNECT and the end of its replay), what
    reaches it is held back, then sent after the replay.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.offsets: set[str] = set()
        # sid -> (event, args without offset, offset) held back while the socket's replay runs.
        self.recovering: dict[str, list[tuple[str, list, str | None]]] = {}

    async def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs):
        if skip_sid is not None:
            skip_sid = self._expand_skip(namespace, skip_sid if isinstance(skip_sid, list) else [skip_sid])
        # AsyncServer.emit always passes ignore_queue; here (below any pub/sub layer) there is no queue.
        kwargs.pop("ignore_queue", None)
        if callback is None and not kwargs:
            return self._deliver(event, data, namespace, to or room, skip_sid)
        return await super().emit(
            event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to, **kwargs
        )

    def _deliver(self, event, data, namespace, room, skip_sid) -> None:
        """A broadcast: the packet encoded and framed once, the frame written to each recipient's
        websocket (:meth:`_Socket.deliver`; queued behind a slow client, or for long polling).

        python-socketio's own emit creates one task per recipient to encode the packet and put it
        on the socket's queue (plus a ping-timeout check the socket's own loop makes anyway): at
        3 000 recipients those tasks cost more than the sends they schedule.
        """
        if namespace not in self.rooms:
            return
        args = list(data) if isinstance(data, tuple) else ([] if data is None else [data])
        offset = None
        if event == OFFSET_EVENT and len(args) == 2 and isinstance(args[1], str):
            args, offset = args[:1], args[1]
        plain = self._encode(namespace, event, args)
        with_offset = None
        skip = set(skip_sid if isinstance(skip_sid, list) else [skip_sid])
        sockets = self.server.eio.sockets
        for sid, eio_sid in self.get_participants(namespace, room):
            socket = sockets.get(eio_sid)
            if sid in skip or socket is None or socket.closed:
                continue
            held = self.recovering.get(sid)
            if held is not None:
                held.append((event, args, offset))
                continue
            encoded = plain
            if offset is not None and sid in self.offsets:
                if with_offset is None:
                    with_offset = self._encode(namespace, event, [*args, offset])
                encoded = with_offset
            self._write(socket, encoded)

    def _encode(self, namespace: str, event: str, args: list) -> list[tuple[engineio.packet.Packet, bytes]]:
        """The engine.io packets of one event, each with its websocket frame (a server's frames
        are not masked), encoded once for every recipient."""
        encoded = self.server.packet_class(socketio.packet.EVENT, namespace=namespace, data=[event, *args]).encode()
        packets = [engineio.packet.Packet(engineio.packet.MESSAGE, part)
                   for part in (encoded if isinstance(encoded, list) else [encoded])]
        return [(part, _frame(part.encode())) for part in packets]

    @staticmethod
    def _write(socket: Any, encoded: list[tuple[engineio.packet.Packet, bytes]]) -> None:
        if isinstance(socket, _Socket):
            for part, frame in encoded:
                socket.deliver(part, frame)
        else:
            for part, _frame_bytes in encoded:
                socket.queue.put_nowait(part)

    def end_recovery(self, sid: str, namespace: str, replay: Sequence[tuple[dict[str, Any], str]]) -> None:
        """Send ``replay`` (``(payload, offset)`` of missed notifications, in order) to ``sid``,
        then what was held back meanwhile, leaving out what the replay already carried."""
        held = self.recovering.pop(sid, [])
        socket = self.server.eio.sockets.get(self.eio_sid_from_sid(sid, namespace))
        if socket is None or socket.closed:
            return
        for payload, offset in replay:
            self._write(socket, self._encode(namespace, OFFSET_EVENT, [payload, offset]))
        replayed = {offset for _payload, offset in replay}
        for event, args, offset in held:
            if offset is not None and offset in replayed:
                continue  # committed before the replay's read, emitted after the socket joined its rooms
            self._write(socket, self._encode(namespace, event, [*args, offset] if offset is not None else args))

    def forget(self, sid: str) -> None:
        self.offsets.discard(sid)
        self.recovering.pop(sid, None)

    def _expand_skip(self, namespace: str, entries: list) -> list:
        rooms = self.rooms.get(namespace, {})
        expanded: list = []
        for entry in entries:
            if isinstance(entry, str) and entry.startswith(MEMBER_ROOM_PREFIX):
                members = rooms.get(entry)
                if members:
                    expanded.extend(members.keys())
            else:
                expanded.append(entry)
        return expanded


class LocalManager(_MemberRoomSkip):
    """One process: rooms live in memory."""


class SharedManager(AsyncAioPikaManager, _MemberRoomSkip):
    """Several replicas: emits fan out through a RabbitMQ fanout exchange.

    Beyond python-socketio's manager: :meth:`emit_many` carries a list of emits in one message
    (``{"method": "emit_many", "messages": [...]}``, each entry python-socketio's own ``emit``
    message), which every replica's listener unpacks; and the listener takes messages
    ``LISTENER_PREFETCH`` at a time rather than one per acknowledgement round trip.
    """

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url=url, channel=channel)
        self.listening = asyncio.Event()

    async def _queue(self, channel, exchange):
        queue = await super()._queue(channel, exchange)
        self.listening.set()
        return queue

    async def emit_many(self, emits: Sequence[Emit], namespace: str = "/") -> None:
        messages = [
            {
                "method": "emit", "event": event, "data": args, "binary": False, "namespace": namespace,
                "room": rooms, "skip_sid": None, "callback": None, "host_id": self.host_id,
            }
            for event, args, rooms in emits
        ]
        for message in messages:  # this replica's sockets
            await self._handle_emit(message)
        for start in range(0, len(messages), EMITS_PER_MESSAGE):  # the other replicas'
            await self._publish(
                {"method": "emit_many", "messages": messages[start:start + EMITS_PER_MESSAGE], "host_id": self.host_id}
            )

    async def _publisher(self):
        async with self._lock:
            if self.publisher_connection is None:
                connection = await self._connection()
                self.publisher_channel = await self._channel(connection)
                self.publisher_exchange = await self._exchange(self.publisher_channel)
                self.publisher_connection = connection
        return self.publisher_exchange

    async def _publish(self, data):
        # python-socketio's publish retries once and then drops the emit, and reports a closed
        # channel (a broker outage) as CancelledError, which callers cannot tell from a real
        # cancellation. Here the emit waits for the robust connection to come back, and fails
        # with an ordinary exception (counted by the caller) after PUBLISH_RETRY_SECONDS.
        body = self.json.dumps(data).encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_RETRY_SECONDS
        delay = 0.1
        waited = False
        while True:
            try:
                exchange = await self._publisher()
                await exchange.publish(
                    aio_pika.Message(body=body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="*"
                )
                if waited:
                    log.info("Socket.IO fan-out resumed after a broker outage")
                return
            except asyncio.CancelledError:
                if cancelled_from_outside():
                    raise
                cause: BaseException = RuntimeError("publish cancelled by the AMQP client")
            except Exception as exc:
                cause = exc
            if loop.time() >= deadline:
                raise SocketPublishFailed(f"broker unreachable for {PUBLISH_RETRY_SECONDS:.0f} s: {cause}") from cause
            if not waited:
                log.warning("Socket.IO fan-out waits for the broker (%s: %s)", type(cause).__name__, cause)
                waited = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _unpack(self, body: bytes) -> list[Any]:
        try:
            data = self.json.loads(body)
        except ValueError:
            return [body]  # python-socketio logs and drops what it cannot read
        if isinstance(data, dict) and data.get("method") == "emit_many":
            if data.get("host_id") == self.host_id:
                return []  # emitted here already
            return [m for m in data.get("messages") or () if isinstance(m, dict)]
        return [data]

    async def _listen(self):
        # python-socketio's listener, with a prefetch above 1 and emit_many unpacked.
        retry_sleep = 1
        while True:
            try:
                async with (await self._connection()) as connection:
                    channel = await self._channel(connection)
                    await channel.set_qos(prefetch_count=LISTENER_PREFETCH)
                    exchange = await self._exchange(channel)
                    queue = await self._queue(channel, exchange)
                    if retry_sleep > 1:
                        log.info("Socket.IO RabbitMQ listener reconnected")
                    async with queue.iterator() as queue_iter:
                        async for message in queue_iter:
                            async with message.process():
                                for item in self._unpack(message.body):
                                    yield item
                            retry_sleep = 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A closed channel (ChannelInvalidStateError) is also how aio-pika reports a lost
                # broker: the listener comes back with the connection rather than ending.
                if cancelled_from_outside():
                    raise asyncio.CancelledError() from None
                if retry_sleep == 1:  # once per outage, not per attempt
                    log.warning("Socket.IO RabbitMQ listener lost the broker (%s); reconnecting", exc)
                await asyncio.sleep(retry_sleep)
                retry_sleep = min(retry_sleep * 2, 60)

    async def close(self) -> None:
        """Stop the listener task and close the publisher connection."""
        task = getattr(self, "thread", None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.thread = None
        connection = self.publisher_connection
        self.publisher_connection = self.publisher_channel = self.publisher_exchange = None
        if connection is not None:
            await connection.close()
        self.listening.clear()


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def token_from_handshake(environ: dict[str, Any], auth: Any) -> str | None:
    """The JWT a client presented: ``auth={"token"}``, then ``Authorization: Bearer``, then ``?token=``."""
    if isinstance(auth, dict):
        token = auth.get("token")
        if isinstance(token, str) and token:
            return _bearer(token) or token
    header = _bearer(environ.get("HTTP_AUTHORIZATION"))
    if header:
        return header
    query = parse_qs(environ.get("QUERY_STRING", ""))
    values = query.get("token")
    if values and values[0]:
        return values[0]
    return None


class SocketServer:
    """The Socket.IO server and the ``SocketChannel`` the dispatcher emits through."""

    def __init__(
        self,
        verifier: Any,
        *,
        broker_url: str | None = None,
        exchange: str = "roomee",
        service: str = "notification",
        allowed_origins: Sequence[str] = (),
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        recovery: Recovery | None = None,
    ) -> None:
        self.verifier = verifier
        self.recovery = recovery
        self.service = service
        self.manager: LocalManager | SharedManager
        if broker_url:
            self.manager = SharedManager(broker_url, channel=f"{exchange}-socketio")
        else:
            self.manager = LocalManager()
        # Browsers of other origins connect only when listed (settings.allowed_origins; "*" for any);
        # clients that send no Origin (apps, servers) are not concerned.
        self.sio = _AsyncServer(
            async_mode="asgi",
            client_manager=self.manager,
            cors_allowed_origins="*" if "*" in allowed_origins else (list(allowed_origins) or None),
            cors_credentials=False,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )
        self._expiries: dict[str, asyncio.TimerHandle] = {}
        access_changes = getattr(verifier, "access_changes", None)
        if access_changes is not None:
            access_changes.listeners.append(self._drop_revoked)
            access_changes.session_listeners.append(self._drop_ended_sessions)
        self._connect_listeners: list[ConnectListener] = []
        self._gauge = socketio_connected_clients.labels(service=service)
        self._connected = 0
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)

    # -- ASGI ----------------------------------------------------------------------------------

    def asgi_app(self, other_asgi_app: Any) -> socketio.ASGIApp:
        """``other_asgi_app`` with Socket.IO served at ``/socket.io``."""
        return _SocketASGIApp(self, other_asgi_app)

    async def start(self) -> None:
        """Initialize the client manager now rather than on the first request.

        With RabbitMQ, waits (bounded) until this replica's queue is bound, so emits from other
        replicas reach its sockets from the first connection on.
        """
        if not self.sio.manager_initialized:
            self.sio.manager_initialized = True
            self.manager.initialize()
        if isinstance(self.manager, SharedManager):
            try:
                await asyncio.wait_for(self.manager.listening.wait(), LISTENER_READY_TIMEOUT_SECONDS)
            except TimeoutError:
                log.warning("Socket.IO RabbitMQ listener not ready yet; it keeps retrying in the background")

    async def close(self) -> None:
        """Disconnect this replica's sockets and stop background tasks."""
        for sid in list(self.manager.rooms.get("/", {}).get(None, {}).keys()):
            try:
                await self.sio.disconnect(sid, ignore_queue=True)
            except Exception:  # a socket already gone must not stop the shutdown
                log.debug("disconnect of %s during shutdown failed", sid, exc_info=True)
        await self.sio.shutdown()
        if isinstance(self.manager, SharedManager):
            await self.manager.close()

    # -- connections ---------------------------------------------------------------------------

    def on_member_connect(self, listener: ConnectListener) -> None:
        """Call ``await listener(sid, principal)`` after a member's socket joined its rooms
        (e.g. to send the current unread counters with :meth:`to_sid`)."""
        self._connect_listeners.append(listener)

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> Accepted:
        token = token_from_handshake(environ, auth)
        if token is None:
            raise socketio.exceptions.ConnectionRefusedError(
                "unauthorized: a member token is required (auth.token, Authorization: Bearer, or ?token=)",
                {"error": "unauthorized", "detail": "missing token"},
            )
        try:
            principal: Principal = await self.verifier.principal(token)
        except RoomeeError as exc:
            kind = {401: "unauthorized", 403: "forbidden"}.get(exc.status_code, "unavailable")
            raise socketio.exceptions.ConnectionRefusedError(
                f"{kind}: {exc.detail}", {"error": exc.code, "detail": exc.detail}
            ) from None
        except Exception:
            log.exception("token verification failed unexpectedly")
            raise socketio.exceptions.ConnectionRefusedError(
                "unavailable: cannot verify the token now",
                {"error": "service_unavailable", "detail": "cannot verify the token now"},
            ) from None
        if principal.is_service or not principal.member_id or not principal.workspace_id:
            raise socketio.exceptions.ConnectionRefusedError(
                "forbidden: a member token is required", {"error": "forbidden", "detail": "a member token is required"}
            )
        await self.sio.save_session(
            sid,
            {"memberId": principal.member_id, "workspaceId": principal.workspace_id, "subject": principal.subject,
             "permissions": sorted(principal.permissions), "sessionId": principal.session_id},
        )
        recovering = self.recovery is not None and recovery_requested(auth)
        if recovering:
            # What reaches the socket once it is in its rooms is held back until the replay is sent.
            self.manager.recovering[sid] = []
            self.manager.offsets.add(sid)
        if principal.expires_at is not None:
            # The connection lives no longer than the token it was opened with.
            delay = max(principal.expires_at - time.time(), 0)
            self._expiries[sid] = asyncio.get_running_loop().call_later(
                delay, lambda: asyncio.ensure_future(self._close(sid, "token expired"))
            )
        await self.sio.enter_room(sid, workspace_room(principal.workspace_id))
        await self.sio.enter_room(sid, member_room(principal.member_id))
        resumed = None
        if recovering:
            # Read after joining the rooms: a notification committed after this read is emitted
            # after it, so it reaches the socket (held back); one committed before is in the read
            # (and, if its emit comes after the join too, sent once: see end_recovery).
            try:
                resumed = await self.recovery.resume(principal, auth)
            except Exception:  # the database cannot tell what was missed: not recovered
                log.exception("Socket.IO connection state recovery failed")
                resumed = Resumed(self.recovery.new_pid(principal), recovered=False)
        self._connected += 1
        self._gauge.set(self._connected)
        log.debug("socket %s connected for member %s", sid, principal.member_id)

        async def after_ack() -> None:
            if resumed is not None:
                self.manager.end_recovery(sid, "/", resumed.events)
            for listener in self._connect_listeners:
                try:
                    await listener(sid, principal)
                except Exception:
                    log.exception("Socket.IO connect listener failed")

        return Accepted({"pid": resumed.pid} if resumed is not None else None, after_ack)

    async def _on_disconnect(self, sid: str, *_reason: Any) -> None:
        self.manager.forget(sid)
        expiry = self._expiries.pop(sid, None)
        if expiry is not None:
            expiry.cancel()
        self._connected = max(0, self._connected - 1)
        self._gauge.set(self._connected)

    async def _close(self, sid: str, reason: str) -> None:
        try:
            await self.sio.emit("session:ended", {"reason": reason}, to=sid, ignore_queue=True)
            await self.sio.disconnect(sid, ignore_queue=True)
        except Exception:  # already gone
            log.debug("closing socket %s failed", sid, exc_info=True)

    async def _drop_revoked(self, member_ids: set[str]) -> None:
        """Close this replica's sockets whose token stopped holding (member removed, permissions changed)."""
        access_changes = self.verifier.access_changes
        for member_id in member_ids:
            for sid in self.member_sids(member_id):
                session = await self.sio.get_session(sid)
                if access_changes.refuses({"mid": member_id, "perms": session.get("permissions")}):
                    await self._close(sid, "membership removed or permissions changed")

    async def _drop_ended_sessions(self, session_ids: set[str]) -> None:
        """Close this replica's sockets opened with a token of an ended session (sign-out, password change)."""
        for sid in list(self.manager.rooms.get("/", {}).get(None, {}).keys()):
            try:
                session = await self.sio.get_session(sid)
            except KeyError:  # gone meanwhile
                continue
            if session.get("sessionId") in session_ids:
                await self._close(sid, "session ended")

    def member_sids(self, member_id: str) -> list[str]:
        """The sids of a member's sockets connected to this replica."""
        return list(self.manager.rooms.get("/", {}).get(member_room(member_id), {}).keys())

    @property
    def connected(self) -> int:
        """Sockets connected to this replica."""
        return self._connected

    # -- SocketChannel -------------------------------------------------------------------------

    async def to_members(self, member_ids: Iterable[str], event: str, payload: dict[str, Any]) -> None:
        """One emit to the rooms ``member:{id}`` of the given members (every replica)."""
        await self.to_members_many([(event, payload, member_ids)])

    async def to_members_many(self, emits: Sequence[tuple[str, dict[str, Any], Iterable[str]]]) -> None:
        """Several ``(event, payload, member_ids)`` emits, in order; with RabbitMQ, one message
        takes them all to the other replicas."""
        by_rooms = [(event, _arguments(event, payload), sorted({member_room(m) for m in member_ids}))
                    for event, payload, member_ids in emits]
        by_rooms = [emit for emit in by_rooms if emit[2]]
        if not by_rooms:
            return
        if isinstance(self.manager, SharedManager):
            await self.manager.emit_many(by_rooms)
            return
        for event, args, rooms in by_rooms:
            await self.sio.emit(event, tuple(args), to=rooms)

    async def to_workspace(
        self,
        workspace_id: str,
        event: str,
        payload: dict[str, Any],
        *,
        skip_member_ids: Iterable[str] = (),
    ) -> None:
        """One emit to ``workspace:{id}``, leaving out every socket of the given members."""
        skip = sorted({member_room(member_id) for member_id in skip_member_ids})
        await self.sio.emit(event, payload, to=workspace_room(workspace_id), skip_sid=skip or None)

    async def to_sid(self, sid: str, event: str, payload: dict[str, Any]) -> None:
        """Emit to one socket (e.g. from an ``on_member_connect`` listener)."""
        await self.sio.emit(event, payload, to=sid)


def _arguments(event: str, payload: dict[str, Any]) -> list[Any]:
    """An emit's arguments: a stored notification's ``notification:new`` carries its offset too
    (dropped on the way out for sockets that did not ask for recovery)."""
    offset = offset_of(payload) if event == OFFSET_EVENT else None
    return [payload] if offset is None else [payload, offset]


class _SocketASGIApp(socketio.ASGIApp):
    """``socketio.ASGIApp`` that starts the Socket.IO manager once the wrapped app has started.

    Lifespan events go to the wrapped app (the platform starts there); when it reports
    ``lifespan.startup.complete``, the server's manager is initialized before that is passed on.
    """

    def __init__(self, server: SocketServer, other_asgi_app: Any) -> None:
        super().__init__(server.sio, other_asgi_app=other_asgi_app, socketio_path=SOCKETIO_PATH)
        self.server = server

    async def lifespan(self, scope, receive, send):
        async def send_after_start(message):
            if message.get("type") == "lifespan.startup.complete":
                await self.server.start()
            await send(message)

        if self.other_asgi_app is None:
            return await super().lifespan(scope, receive, send)
        await self.other_asgi_app(scope, receive, send_after_start)


def new_socket_server(ctx: Any, *, broker_url: str | None) -> SocketServer:
    """A Socket.IO server configured from the service context's settings (recovery reads its database)."""
    settings = ctx.settings
    return SocketServer(
        ctx.platform.verifier,
        broker_url=broker_url,
        exchange=settings.exchange,
        service=getattr(ctx, "name", "notification"),
        allowed_origins=settings.allowed_origins,
        ping_interval=settings.socket_ping_interval_seconds,
        ping_timeout=settings.socket_ping_timeout_seconds,
        recovery=Recovery(ctx.db, lambda: clock.now(ctx), settings.socket_recovery_window_seconds)
        if getattr(ctx, "db", None) is not None else None,
    )


def socket_server(ctx: Any) -> SocketServer:
    """The notification target's Socket.IO server, created once per service context.

    Puts the ``AsyncServer`` in ``ctx.state["sio"]`` and the ``SocketChannel`` in
    ``ctx.state["socket"]``, and registers its shutdown with ``ctx.on_stop``.
    """
    server = ctx.state.get("socket")
    if server is None:
        server = new_socket_server(ctx, broker_url=ctx.settings.broker_url)
        ctx.state["socket"] = server
        ctx.state["sio"] = server.sio
        ctx.on_stop(server.close)
    return server


def mount(asgi_app: Any, ctx: Any) -> socketio.ASGIApp:
    """The target's ``mount`` hook: serve Socket.IO at ``/socket.io`` beside the HTTP app."""
    return socket_server(ctx).asgi_app(asgi_app)
