"""The Socket.IO server of the notification target (seed Flow 6, "socket" channel).

One python-socketio ``AsyncServer`` (ASGI mode) is served by the notification target on the
same port as its HTTP routes: the target's ``mount`` hook (:func:`mount`) wraps the platform's
ASGI app with ``socketio.ASGIApp`` at ``/socket.io``.

Authentication: the platform JWT, from the Socket.IO ``auth`` payload (``{"token": "..."}``),
an ``Authorization: Bearer`` header, or a ``?token=`` query parameter, in that order. A
connection without a valid *member* token is refused (``connect_error`` with a message and
``{"error": code, "detail": ...}`` as data, the platform's error model). An accepted socket joins
``workspace:{workspaceId}`` and ``member:{memberId}``.

The parts with a concern of their own live beside this module: the engine.io websocket fast path
(:mod:`.transport`), who receives an emit on this replica and on the others (:mod:`.fanout`), and
connection state recovery (:mod:`.recovery`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs

import socketio
import socketio.packet
from prometheus_client import Gauge

from roomee.kit.auth import Principal
from roomee.kit.errors import RoomeeError
from roomee.notification import clock
from roomee.notification.realtime.fanout import (
    EXCHANGE_SUFFIX,
    LISTENER_READY_TIMEOUT_SECONDS,
    LocalManager,
    SharedManager,
    member_room,
    workspace_room,
)
from roomee.notification.realtime.recovery import OFFSET_EVENT, Recovery, Resumed, offset_of
from roomee.notification.realtime.recovery import requested as recovery_requested
from roomee.notification.realtime.transport import EngineIOServer

log = logging.getLogger("roomee.notification.socket")

SOCKETIO_PATH = "socket.io"

socketio_connected_clients = Gauge(
    "socketio_connected_clients",
    "Socket.IO clients connected to this process.",
    ["service"],
)

ConnectListener = Callable[[str, Principal], Awaitable[None]]


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
        return EngineIOServer

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
            self.manager = SharedManager(broker_url, channel=f"{exchange}{EXCHANGE_SUFFIX}")
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
        if isinstance(self.manager, SharedManager):
            self.manager.stop_binding()
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
        # The manager's answer, not sio's: whether this replica's queue is bound to the rooms (shared manager).
        joined = [await self.manager.enter_room(sid, "/", room)
                  for room in (workspace_room(principal.workspace_id), member_room(principal.member_id))]
        resumed = None
        if recovering and False in joined:
            # Another replica's emit between the replay's read and the binding would be neither held back nor
            # replayed: not recovered (the client refetches) rather than recovered with a gap.
            resumed = Resumed(self.recovery.new_pid(principal), recovered=False)
        elif recovering:
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
