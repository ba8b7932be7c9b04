"""The client managers of the notification target's Socket.IO server: who gets an emit.

:class:`RoomManager` delivers an emit to this replica's sockets in its rooms (the packet encoded
and framed once for every recipient), and holds the per-socket side of connection state recovery.
:class:`LocalManager` is the one-process manager; :class:`SharedManager` carries emits between
replicas through RabbitMQ, by room: a replica's queue is bound to the rooms of its own sockets, so
it receives only the emits for those rooms (:func:`routing_key`).

Rooms: ``workspace:{workspaceId}`` and ``member:{memberId}`` (:func:`workspace_room`,
:func:`member_room`).

Leaving members out of a workspace broadcast (``skip_sid`` holding ``member:{id}`` rooms):
``skip_sid`` takes socket ids, but a replica only knows the sids of its own sockets, so sids
resolved on the emitting replica would not skip the author's sockets on another one. The emit
therefore carries the member rooms to leave out, and the manager of every replica turns them into
the sids of its own sockets in those rooms just before sending (:meth:`RoomManager._expand_skip`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
import engineio.packet
import socketio.packet
from socketio.async_aiopika_manager import AsyncAioPikaManager
from socketio.async_manager import AsyncManager

from roomee.notification.hooks import cancelled_from_outside
from roomee.notification.realtime.recovery import OFFSET_EVENT
from roomee.notification.realtime.transport import Socket, websocket_frame

log = logging.getLogger("roomee.notification.socket")

MEMBER_ROOM_PREFIX = "member:"
WORKSPACE_ROOM_PREFIX = "workspace:"
# How long start() waits for the RabbitMQ listener of the shared manager to be bound (a bound queue takes
# a few tens of ms): short, since the process listens (answers /health) only after it.
LISTENER_READY_TIMEOUT_SECONDS = 1.0
# A binding that failed (the broker away) is tried again after this long, until it matches the rooms held.
BIND_RETRY_SECONDS = 1.0
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


# The routing key every replica binds (emits that name no member or workspace room, control messages).
ALL_KEY = "all"
# The exchange of the Socket.IO fan-out is ``{settings.exchange}`` followed by this.
EXCHANGE_SUFFIX = "-socketio-rooms"


def routing_key(room: Any) -> str | None:
    """The RabbitMQ routing key of a member or workspace room (``member.{id}``, ``workspace.{id}``)."""
    if isinstance(room, str):
        if room.startswith(MEMBER_ROOM_PREFIX):
            return "member." + room[len(MEMBER_ROOM_PREFIX):]
        if room.startswith(WORKSPACE_ROOM_PREFIX):
            return "workspace." + room[len(WORKSPACE_ROOM_PREFIX):]
    return None


def member_room(member_id: str) -> str:
    return f"{MEMBER_ROOM_PREFIX}{member_id}"


def workspace_room(workspace_id: str) -> str:
    return f"{WORKSPACE_ROOM_PREFIX}{workspace_id}"


class RoomManager(AsyncManager):
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
        websocket (:meth:`.transport.Socket.deliver`; queued behind a slow client, or for long polling).

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
        return [(part, websocket_frame(part.encode())) for part in packets]

    @staticmethod
    def _write(socket: Any, encoded: list[tuple[engineio.packet.Packet, bytes]]) -> None:
        if isinstance(socket, Socket):
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


class LocalManager(RoomManager):
    """One process: rooms live in memory."""


class SharedManager(AsyncAioPikaManager, RoomManager):
    """Several replicas: an emit reaches only the replicas holding sockets of its rooms.

    Emits travel on a RabbitMQ *direct* exchange (``{exchange}-socketio-rooms``), each message
    published with the routing key of every room it is for (:func:`routing_key`:
    ``workspace.{id}``, ``member.{id}``): the first as its routing key, the others in its ``BCC``
    header (RabbitMQ's sender-selected distribution), so a replica's queue gets the message once
    however many of its rooms it names. Each replica's exclusive queue is bound to a room's key when
    its first local socket joins that room (the join waits for the binding, so nothing emitted after
    it is missed) and unbound when the last one leaves. Everything else (an emit to no room, to a
    room of another kind, python-socketio's cross-replica ``disconnect``/``enter_room``/...) goes with
    :data:`ALL_KEY`, which every replica binds; an emit to a socket id goes with the key of that
    socket's member room when the socket is on this replica. One publisher channel and one queue per
    replica keep today's order: a replica gets the emits of one publisher in the order they were sent.

    Beyond python-socketio's manager: :meth:`emit_many` carries a list of emits in one message
    (``{"method": "emit_many", "messages": [...]}``, each entry python-socketio's own ``emit``
    message), which the listener unpacks; and the listener takes messages ``LISTENER_PREFETCH`` at a
    time rather than one per acknowledgement round trip. ``received_messages`` and
    ``received_emits`` count what this replica's queue brought.
    """

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url=url, channel=channel)
        self.listening = asyncio.Event()
        self.received_messages = 0
        self.received_emits = 0
        # Routing keys of the rooms holding a socket of this replica, and those the current queue is bound to.
        self.wanted: set[str] = set()
        self.bound: set[str] = set()
        self._binding: dict[str, asyncio.Future] = {}
        self._listener_queue: Any = None
        self._listener_exchange: Any = None
        # sid -> the routing key of its member room (a sid room's emit goes with it).
        self._sid_keys: dict[str, str] = {}

    async def _exchange(self, channel):
        return await channel.declare_exchange(self.channel, aio_pika.ExchangeType.DIRECT)

    async def _queue(self, channel, exchange):
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, ALL_KEY)
        self._listener_queue, self._listener_exchange, self.bound = queue, exchange, {ALL_KEY}
        # A new queue (first start, or after the broker came back): bind every room held meanwhile.
        await asyncio.gather(*(self._sync(key) for key in list(self.wanted)), return_exceptions=True)
        self.listening.set()
        return queue

    # -- bindings follow the rooms of this replica's sockets ----------------------------------

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        key = routing_key(room)
        if key is None:
            return
        if room.startswith(MEMBER_ROOM_PREFIX):
            self._sid_keys[sid] = key
        if key not in self.wanted:
            self.wanted.add(key)
            if self._listener_queue is not None:  # otherwise bound when the listener has a queue again
                self._sync(key)

    def basic_leave_room(self, sid, namespace, room):
        super().basic_leave_room(sid, namespace, room)
        if room == sid:
            self._sid_keys.pop(sid, None)
        key = routing_key(room)
        if key is not None and key in self.wanted and not any(room in rooms for rooms in self.rooms.values()):
            self.wanted.discard(key)
            if self._listener_queue is not None:
                self._sync(key)

    async def enter_room(self, sid, namespace, room, eio_sid=None) -> bool:
        """Join ``room``; returns once this replica's queue is bound to the room's key: True, or False
        when the binding is not there yet (emits of other replicas may be missed until it is)."""
        await super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        key = routing_key(room)
        binding = self._binding.get(key) if key is not None else None
        if binding is not None:
            try:
                await asyncio.wait_for(asyncio.shield(binding), LISTENER_READY_TIMEOUT_SECONDS)
            except TimeoutError:
                log.warning("Socket.IO room %s not bound on RabbitMQ yet; its emits may arrive late", room)
                return False
        return key is None or key in self.bound

    def _sync(self, key: str) -> asyncio.Future:
        """Bind or unbind ``key`` until the queue's bindings match ``wanted`` (one task per key)."""
        binding = self._binding.get(key)
        if binding is None:
            binding = self._binding[key] = asyncio.ensure_future(self._apply(key))
        return binding

    async def _apply(self, key: str) -> None:
        try:
            while (queue := self._listener_queue) is not None:
                wanted = key in self.wanted
                if wanted == (key in self.bound):
                    return
                if wanted:
                    await queue.bind(self._listener_exchange, key)
                else:
                    await queue.unbind(self._listener_exchange, key)
                if queue is self._listener_queue:
                    (self.bound.add if wanted else self.bound.discard)(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The broker is gone. A robust connection restores its queue in place (the listener does not
            # start again to bind what is wanted), so this key is tried again until it matches.
            log.debug("Socket.IO binding of %s failed: %s", key, exc)
            asyncio.get_running_loop().call_later(BIND_RETRY_SECONDS, self._resync, key)
        finally:
            self._binding.pop(key, None)

    def _resync(self, key: str) -> None:
        if self._listener_queue is not None and (key in self.wanted) != (key in self.bound):
            self._sync(key)

    def routing_keys(self, data: dict[str, Any]) -> list[str]:
        """The routing keys of a pub/sub message: one per room it is for, or ``[ALL_KEY]``."""
        method = data.get("method")
        if method == "emit":
            rooms = [data.get("room")]
        elif method == "emit_many":
            rooms = [m.get("room") for m in data.get("messages") or ()]
        else:
            return [ALL_KEY]
        keys: set[str] = set()
        for target in rooms:
            for room in target if isinstance(target, list) else [target]:
                key = routing_key(room) or self._sid_keys.get(room)
                if key is None:
                    return [ALL_KEY]
                keys.add(key)
        return sorted(keys) or [ALL_KEY]

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
        keys = self.routing_keys(data)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_RETRY_SECONDS
        delay = 0.1
        waited = False
        while True:
            try:
                exchange = await self._publisher()
                await exchange.publish(
                    aio_pika.Message(body=body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                     headers={"BCC": keys[1:]} if len(keys) > 1 else None),
                    routing_key=keys[0],
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
                                self.received_messages += 1
                                items = self._unpack(message.body)
                                self.received_emits += len(items)
                                for item in items:
                                    yield item
                            retry_sleep = 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._listener_queue = None
                self.bound = set()
                # A closed channel (ChannelInvalidStateError) is also how aio-pika reports a lost
                # broker: the listener comes back with the connection rather than ending.
                if cancelled_from_outside():
                    raise asyncio.CancelledError() from None
                if retry_sleep == 1:  # once per outage, not per attempt
                    log.warning("Socket.IO RabbitMQ listener lost the broker (%s); reconnecting", exc)
                await asyncio.sleep(retry_sleep)
                retry_sleep = min(retry_sleep * 2, 60)

    def stop_binding(self) -> None:
        """Leave the queue's bindings as they are from now on (shutting down: the exclusive queue goes
        with its connection, no need for an unbind per room the departing sockets leave)."""
        self._listener_queue = None

    async def close(self) -> None:
        """Stop the listener task and close the publisher connection."""
        self.stop_binding()
        pending = list(self._binding.values())
        for binding in pending:
            binding.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
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
        self._listener_queue = None
        self.bound = set()
