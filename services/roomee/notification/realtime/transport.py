"""The engine.io transport of the notification target's Socket.IO server: the websocket fast path.

A broadcast is encoded and framed once (:func:`websocket_frame`) and the frame written straight to each
recipient's connection (:meth:`WebSocket.write`), as Node's socket.io does, instead of one ASGI
``send`` (and one task) per recipient. An idle websocket connection holds no task of its own
(:class:`Socket`): packets are written at once, queued behind a slow client only, and pings are
timer callbacks.

What the fast path relies on outside the public ASGI interface, pinned by
``tests/notification/test_realtime_transport.py`` (so a uvicorn or websockets upgrade fails a test,
not production) and by the exact versions in ``pyproject.toml``:

- uvicorn's websockets sans-I/O protocol, :data:`SansIOProtocol`
  (``uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol``), whose bound
  method is the ASGI ``send`` of a websocket scope (``send.__self__`` is the connection);
- that protocol's attributes :data:`PROTOCOL_ATTRIBUTES`: ``handshake_complete``, ``conn`` (a
  ``websockets.protocol.Protocol``, whose ``extensions`` and ``state`` are read), ``response``
  (its ``Sec-WebSocket-Extensions`` header is dropped to decline permessage-deflate),
  ``close_sent``, ``disconnected``, ``writable`` (an ``asyncio.Event`` cleared above the
  transport's high-water mark) and ``transport``;
- ``websockets.frames.Frame.serialize(mask=False)`` and ``websockets.protocol.State.OPEN``;
- engine.io's socket internals overridden by :class:`Socket` (``queue``, ``schedule_ping``,
  ``last_ping``, ``_websocket_handler``, ``check_ping_timeout``) and its server's ``_async``
  driver table (:class:`EngineIOServer`).

Under any other ASGI server (or another websocket implementation) :meth:`WebSocket.write` declines
and every packet takes the ASGI ``send``, as python-engineio does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import engineio
import engineio.async_drivers.asgi
import engineio.async_socket
import engineio.exceptions
import engineio.packet
from websockets.frames import Frame, Opcode
from websockets.protocol import State as WebSocketState

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol as SansIOProtocol
except ImportError:  # another ASGI server (or uvicorn without websockets): no direct writes
    SansIOProtocol = None

log = logging.getLogger("roomee.notification.socket")

# The attributes of a uvicorn SansIOProtocol connection the fast path reads or writes.
PROTOCOL_ATTRIBUTES = ("handshake_complete", "conn", "response", "close_sent", "disconnected", "writable", "transport")


def websocket_frame(message: str | bytes) -> bytes:
    """A server's (unmasked, uncompressed) websocket frame carrying one engine.io packet."""
    if isinstance(message, str):
        return Frame(Opcode.TEXT, message.encode()).serialize(mask=False)
    return Frame(Opcode.BINARY, message).serialize(mask=False)


class WebSocket(engineio.async_drivers.asgi.WebSocket):
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
        if SansIOProtocol is not None and isinstance(connection, SansIOProtocol) \
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


class Socket(engineio.async_socket.AsyncSocket):
    """An engine.io socket without a task of its own while idle.

    engine.io's socket keeps a writer task per websocket connection (waiting on its queue), a
    task per received message and a sleeping task per ping interval. Here, on the websocket
    transport, a packet is written to the connection at once (:meth:`deliver`) when nothing is
    waiting before it; the queue and a flush task are used only while the connection pushes
    back (or, with another ASGI server, for every packet). Pings are timer callbacks. Long
    polling and the upgrade from it are engine.io's own, on the same queue.
    """

    ws: WebSocket | None = None
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
                and ws.write(frame if frame is not None else websocket_frame(pkt.encode())):
            return
        self.queue.put_nowait(pkt)
        if ws is not None and self.flusher is None:
            self.flusher = asyncio.ensure_future(self._flush(ws))

    async def _flush(self, ws: WebSocket) -> None:
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


class EngineIOServer(engineio.AsyncServer):
    """engine.io's server with :class:`Socket` sockets and the :class:`WebSocket` driver."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._async = dict(self._async, websocket=WebSocket)

    async def _trigger_event(self, event, *args, **kwargs):
        if event == "connect":
            # engine.io creates its own socket class; the socket is new, only its OPEN packet is queued.
            socket = self.sockets.get(args[0])
            if socket is not None and type(socket) is engineio.async_socket.AsyncSocket:
                socket.__class__ = Socket
        return await super()._trigger_event(event, *args, **kwargs)
