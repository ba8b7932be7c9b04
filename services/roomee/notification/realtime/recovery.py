"""Socket.IO connection state recovery, served from the stored notifications.

The protocol is socket.io 4's, which the stock socket.io-client 4 speaks: the server's CONNECT
answer carries ``pid`` (a private session id), every ``notification:new`` carries an offset as its
last argument, and a reconnecting client puts ``{pid, offset}`` (its last offset) into its CONNECT
payload beside its token. The client counts the connection as recovered when the answer carries
the same ``pid`` again; a new ``pid`` means "not recovered" (the client refetches).

Unlike Node's implementation, nothing is kept in a server's memory: the ``pid`` is self-describing
(member, workspace and issue time, signed with the cursor key every replica shares) and the offset
is a stored notification's position in its member's inbox (``created_at`` and id, the inbox
index's order). Whichever replica the client reconnects to, restarted or not, reads what the
member missed from the receiver rows.

Opt-in: a client asks with ``auth.recovery = true`` (or by sending a ``pid``). Python clients,
whose event handlers take exactly the arguments sent, are not given an extra offset argument
unless they ask.

The window: the connection is recovered when none of the missed notifications is older than
``socket_recovery_window_seconds`` (and there are at most :data:`REPLAY_LIMIT` of them);
otherwise ``recovered`` is false and nothing is replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from roomee.kit.auth import Principal
from roomee.kit.clock import as_utc
from roomee.kit.errors import RoomeeError
from roomee.kit.schemas import decode_cursor, encode_cursor
from roomee.notification.repository import NotificationRepository
from roomee.notification.schemas import NotificationOut

log = logging.getLogger("roomee.notification.socket")

# The event whose last argument is an offset (only for sockets that asked for recovery).
OFFSET_EVENT = "notification:new"
PID_KIND = "sio-pid"
# More missed notifications than this: not recovered (the client refetches a page instead).
REPLAY_LIMIT = 1000


def offset_of(payload: dict[str, Any]) -> str | None:
    """The offset of a ``notification:new`` payload: its position in the member's inbox; None for
    socket-only updates (not stored, not replayable)."""
    notification_id, created_at = payload.get("id"), payload.get("createdAt")
    if isinstance(notification_id, str) and isinstance(created_at, str):
        return f"{created_at}|{notification_id}"
    return None


def parse_offset(offset: Any) -> tuple[datetime, str] | None:
    if not isinstance(offset, str):
        return None
    created_at, sep, notification_id = offset.partition("|")
    if not sep or not notification_id:
        return None
    try:
        return as_utc(datetime.fromisoformat(created_at)), notification_id
    except ValueError:
        return None


def requested(auth: Any) -> bool:
    """Whether the CONNECT payload asks for recovery (``recovery: true``, or a ``pid`` sent back)."""
    return isinstance(auth, dict) and (auth.get("recovery") is True or "pid" in auth)


@dataclass
class Resumed:
    """The answer to a CONNECT that asked for recovery."""

    pid: str
    recovered: bool
    # (payload, offset) of every missed notification, oldest first.
    events: list[tuple[dict[str, Any], str]] = field(default_factory=list)


class Recovery:
    """Issues pids and reads what a reconnecting member missed from the database."""

    def __init__(self, db: Any, now: Callable[[], datetime], window_seconds: float) -> None:
        self.db = db
        self.now = now
        self.window = timedelta(seconds=window_seconds)

    def new_pid(self, principal: Principal) -> str:
        return encode_cursor(PID_KIND, principal.member_id, principal.workspace_id, self.now().isoformat())

    def _issued_at(self, pid: Any, principal: Principal) -> datetime | None:
        """When ``pid`` was issued, if it is a genuine pid of this member in this workspace."""
        if not isinstance(pid, str):
            return None
        try:
            values = decode_cursor(pid)
        except RoomeeError:
            return None
        if not values or len(values) != 4 or values[:3] != [PID_KIND, principal.member_id, principal.workspace_id]:
            return None
        try:
            return as_utc(datetime.fromisoformat(values[3]))
        except (TypeError, ValueError):
            return None

    async def resume(self, principal: Principal, auth: dict[str, Any]) -> Resumed:
        """Recovered (same pid, the missed notifications) or not (a new pid, nothing)."""
        issued_at = self._issued_at(auth.get("pid"), principal)
        if issued_at is None:
            return Resumed(self.new_pid(principal), recovered=False)
        # No offset: the client received no notification since it was given the pid.
        position = parse_offset(auth["offset"]) if auth.get("offset") is not None else (issued_at, "")
        if position is None:
            return Resumed(self.new_pid(principal), recovered=False)
        async with self.db.transaction() as session:
            rows = await NotificationRepository(session).inbox_after(
                principal.member_id, principal.workspace_id, position, limit=REPLAY_LIMIT + 1
            )
        if len(rows) > REPLAY_LIMIT or (rows and as_utc(rows[0]["created_at"]) < self.now() - self.window):
            return Resumed(self.new_pid(principal), recovered=False)
        events = []
        for row in rows:
            payload = NotificationOut.of(row, row["locale"]).wire()
            events.append((payload, offset_of(payload)))
        return Resumed(auth["pid"], recovered=True, events=events)
