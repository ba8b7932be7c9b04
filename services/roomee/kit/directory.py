"""A service's local copy of the members directory (who is a member of which workspace, their name,
email, locale and timezone; workspace names), for services that must not call the members service
on every request (the seed's matrix: news and notification ``POST /members/sync`` periodically).

It is kept by ``POST /members/sync`` at start and every ``members_sync_interval_seconds`` (resuming
from the stored cursor) and by the ``member.*`` / ``workspace.*`` events as they arrive. A row
changes only when the incoming data is not older than what is stored, so a slow sync page cannot
undo a newer event.

A service adds the tables to its metadata (``add_directory_tables``), and gives
``apply_event`` / ``sync_members`` a store over them: :class:`DirectoryStore`, or any object with
the same write methods (``upsert_members``, ``mark_members_deleted``, ``upsert_workspace``,
``add_missing_workspaces``, ``cursor``, ``save_cursor``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.clock import as_utc
from roomee.kit.events.envelope import parse_timestamp
from roomee.kit.http import raise_for_status
from roomee.kit.observability import RetryNotice

log = logging.getLogger("roomee.kit.directory")

SYNC_CURSOR = "members"
SYNC_PAGE = 1000
# What directory events the members service emits; a directory's queue binds these.
DIRECTORY_EVENTS = ("roomee.notification.member.*", "roomee.notification.workspace.*")
MEMBER_COLUMNS = ("workspace_id", "hotel_id", "user_id", "name", "email", "locale", "timezone", "deleted_at")


@dataclass(frozen=True)
class DirectoryTables:
    member: sa.Table
    workspace: sa.Table
    sync_cursor: sa.Table


def add_directory_tables(metadata: sa.MetaData) -> DirectoryTables:
    """The directory's tables on a service's metadata (its own schema or SQLite file)."""
    member = sa.Table(
        "member_directory",
        metadata,
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("workspace_id", sa.String(36), nullable=False, index=True),
        sa.Column("hotel_id", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(36), nullable=True),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("locale", sa.String(16), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),  # the source's change time
    )
    workspace = sa.Table(
        "workspace_directory",
        metadata,
        sa.Column("workspace_id", sa.String(36), primary_key=True),
        sa.Column("hotel_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("locale", sa.String(16), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Where the periodic sync stopped (the members service's opaque cursor).
    sync_cursor = sa.Table(
        "sync_cursor",
        metadata,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("cursor", sa.Text, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    return DirectoryTables(member, workspace, sync_cursor)


class DirectoryWriter(Protocol):
    async def upsert_members(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] = ...) -> None: ...
    async def mark_members_deleted(self, member_ids: Sequence[str], when: datetime) -> None: ...
    async def upsert_workspace(self, row: dict[str, Any]) -> None: ...
    async def add_missing_workspaces(self, rows: Sequence[dict[str, Any]]) -> None: ...
    async def cursor(self, name: str) -> str | None: ...
    async def save_cursor(self, name: str, cursor: str | None, when: datetime) -> None: ...


class DirectoryStore:
    """The directory's SQL on one session."""

    def __init__(self, session: AsyncSession, tables: DirectoryTables) -> None:
        self.session = session
        self.tables = tables
        self.is_postgres = session.get_bind().dialect.name == "postgresql"

    def _insert(self, table: sa.Table):
        return (postgresql.insert if self.is_postgres else sqlite.insert)(table)

    async def upsert_members(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] = MEMBER_COLUMNS) -> None:
        """Upsert member rows; an existing row changes only if the incoming one is not older.

        ``columns`` are the fields the rows carry (an event may know a member's name but not its locale).
        """
        table = self.tables.member
        for start in range(0, len(rows), 2000):
            stmt = self._insert(table).values(list(rows[start:start + 2000]))
            await self.session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[table.c.member_id],
                    set_={**{c: stmt.excluded[c] for c in columns}, "updated_at": stmt.excluded.updated_at},
                    where=table.c.updated_at <= stmt.excluded.updated_at,
                )
            )

    async def mark_members_deleted(self, member_ids: Sequence[str], when: datetime) -> None:
        table = self.tables.member
        if member_ids:
            await self.session.execute(
                sa.update(table)
                .where(table.c.member_id.in_(list(member_ids)), table.c.updated_at <= when)
                .values(deleted_at=when, updated_at=when)
            )

    async def upsert_workspace(self, row: dict[str, Any]) -> None:
        table = self.tables.workspace
        stmt = self._insert(table).values(**row)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c.workspace_id],
                set_={key: stmt.excluded[key] for key in row if key != "workspace_id"},
                where=table.c.updated_at <= stmt.excluded.updated_at,
            )
        )

    async def add_missing_workspaces(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert workspaces not known yet (their events are the authority on changes)."""
        if rows:
            await self.session.execute(self._insert(self.tables.workspace).values(list(rows)).on_conflict_do_nothing())

    async def cursor(self, name: str) -> str | None:
        table = self.tables.sync_cursor
        result = await self.session.execute(sa.select(table.c.cursor).where(table.c.name == name))
        return result.scalar_one_or_none()

    async def save_cursor(self, name: str, cursor: str | None, when: datetime) -> None:
        stmt = self._insert(self.tables.sync_cursor).values(name=name, cursor=cursor, updated_at=when)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[self.tables.sync_cursor.c.name],
                set_={"cursor": stmt.excluded.cursor, "updated_at": stmt.excluded.updated_at},
            )
        )

    # -- reads -------------------------------------------------------------------------------------

    async def member(self, member_id: str) -> dict | None:
        table = self.tables.member
        row = (await self.session.execute(sa.select(table).where(table.c.member_id == member_id))).mappings().first()
        return dict(row) if row else None

    async def active_member_ids(self, workspace_id: str, *, except_ids: Sequence[str] = ()) -> list[str]:
        """The workspace's members not removed, in id order."""
        c = self.tables.member.c
        query = sa.select(c.member_id).where(c.workspace_id == workspace_id, c.deleted_at.is_(None))
        if except_ids:
            query = query.where(c.member_id.not_in(list(except_ids)))
        return list((await self.session.execute(query.order_by(c.member_id))).scalars())

    async def workspace(self, workspace_id: str) -> dict | None:
        table = self.tables.workspace
        row = (
            await self.session.execute(sa.select(table).where(table.c.workspace_id == workspace_id))
        ).mappings().first()
        return dict(row) if row else None


def _name(first: Any, last: Any) -> str:
    return " ".join(str(part).strip() for part in (first, last) if part and str(part).strip())


def _when(envelope: dict[str, Any], fallback: datetime) -> datetime:
    stamp = (envelope.get("metadata") or {}).get("timestamp")
    try:
        return parse_timestamp(stamp) if stamp else fallback
    except ValueError:
        return fallback


async def apply_event(store: DirectoryWriter, envelope: dict[str, Any], now: datetime) -> None:
    """Update the directory from a ``member.*`` or ``workspace.*`` event (others are ignored)."""
    event_type = envelope.get("type") or ""
    payload = envelope.get("payload") or {}
    when = _when(envelope, now)
    workspace_id = envelope.get("workspaceId")
    if event_type in ("member.created", "member.updated", "member.deleted"):
        member = payload.get("member") or {}
        if not member.get("id") or not workspace_id:
            return
        await store.upsert_members(
            [
                {
                    "member_id": member["id"],
                    "workspace_id": workspace_id,
                    "hotel_id": envelope.get("ecosystemId"),
                    "user_id": member.get("userId"),
                    "name": _name(member.get("firstName"), member.get("lastName")),
                    "email": member.get("email"),
                    "locale": member.get("locale"),
                    "timezone": member.get("timezone"),
                    "deleted_at": when if event_type == "member.deleted" else None,
                    "updated_at": when,
                }
            ]
        )
    elif event_type == "member.registered":
        member = payload.get("member") or {}
        if not member.get("id") or not workspace_id:
            return
        await store.upsert_members(
            [
                {
                    "member_id": member["id"],
                    "workspace_id": workspace_id,
                    "hotel_id": envelope.get("ecosystemId"),
                    "user_id": member.get("userId"),
                    "name": member.get("name") or "",
                    "email": member.get("email"),
                    "deleted_at": None,
                    "updated_at": when,
                }
            ],
            columns=("workspace_id", "hotel_id", "user_id", "name", "email", "deleted_at"),
        )
    elif event_type.startswith("workspace.") and workspace_id:
        await store.upsert_workspace(
            {
                "workspace_id": workspace_id,
                "hotel_id": envelope.get("ecosystemId") or payload.get("ecosystemId"),
                "name": payload.get("name") or envelope.get("workspaceName"),
                "locale": payload.get("locale"),
                "timezone": payload.get("timezone"),
                "deleted_at": when if event_type == "workspace.deleted" else None,
                "updated_at": when,
            }
        )
        if event_type == "workspace.deleted":
            await store.mark_members_deleted([str(i) for i in payload.get("removedMemberIds") or ()], when)


def _synced_row(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "member_id": item["id"],
        "workspace_id": item["workspaceId"],
        "hotel_id": item.get("ecosystemId"),
        "user_id": item.get("userId"),
        "name": _name(item.get("firstName"), item.get("lastName")),
        "email": item.get("email"),
        "locale": item.get("locale"),
        "timezone": item.get("timezone"),
        "deleted_at": as_utc(parse_timestamp(item["deletedAt"])) if item.get("deletedAt") else None,
        "updated_at": as_utc(parse_timestamp(item["updatedAt"])),
    }


def _error_code(response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


StoreFactory = Callable[[AsyncSession], DirectoryWriter]
LOOKUP_PAGE = 1000


async def _store_synced(store: DirectoryWriter, items: list[dict[str, Any]], stamp: datetime) -> None:
    """Members as ``/members/sync`` and ``/members/lookup`` give them, with the workspaces they name."""
    await store.upsert_members([_synced_row(item) for item in items])
    workspaces = {
        item["workspaceId"]: {
            "workspace_id": item["workspaceId"],
            "hotel_id": item.get("ecosystemId"),
            "name": item.get("workspaceName"),
            "locale": item.get("workspaceLocale"),
            "timezone": item.get("workspaceTimezone"),
            "deleted_at": None,
            "updated_at": stamp,
        }
        for item in items
    }
    await store.add_missing_workspaces(list(workspaces.values()))


async def resolve_members(ctx, store: DirectoryWriter, member_ids: Sequence[str], now: datetime) -> None:
    """Ask members about ids this directory does not know yet (an event may name a member before
    the sync or the member's event reaches us) and store its answer. Ids members does not know stay
    unknown: callers drop them rather than trust an event for a member's workspace."""
    ids = sorted(set(member_ids))
    for start in range(0, len(ids), LOOKUP_PAGE):
        response = await ctx.client("members").post("/members/lookup", json={"ids": ids[start:start + LOOKUP_PAGE]})
        raise_for_status(response)
        await _store_synced(store, response.json(), now)


async def sync_members(ctx, store_of: StoreFactory, now: Callable[[], datetime]) -> int:
    """Pull every member changed since the stored cursor; return how many were applied.

    ``ctx`` is the service's ``ServiceContext`` (its database and its client of the members service).
    """
    client = ctx.client("members")
    async with ctx.db.transaction() as session:
        cursor = await store_of(session).cursor(SYNC_CURSOR)
    applied = 0
    while True:
        response = await client.post("/members/sync", json={"cursor": cursor, "limit": SYNC_PAGE})
        if response.status_code == 422 and cursor is not None and _error_code(response) == "invalid_cursor":
            # A cursor from a former format or key: start over rather than fail forever (the
            # upserts keep newer rows, so replaying the feed is harmless).
            log.warning("stored member sync cursor refused; syncing from the start", extra={"service": ctx.name})
            cursor = None
            continue
        raise_for_status(response)
        body = response.json()
        items = body.get("items") or []
        stamp = now()
        async with ctx.db.transaction() as session:
            store = store_of(session)
            await _store_synced(store, items, stamp)
            await store.save_cursor(SYNC_CURSOR, body.get("nextCursor"), stamp)
        applied += len(items)
        cursor = body.get("nextCursor")
        if len(items) < SYNC_PAGE or not cursor:
            return applied


async def sync_worker(ctx, store_of: StoreFactory, now: Callable[[], datetime]) -> None:
    """Sync at start, then every ``members_sync_interval_seconds``; retry sooner after a failure."""
    interval = max(ctx.settings.members_sync_interval_seconds, 1.0)
    # Members may still be starting: said once, retried quietly, and its recovery said once.
    notice = RetryNotice(log, "member directory sync", level=logging.INFO, extra={"service": ctx.name})
    while True:
        try:
            applied = await sync_members(ctx, store_of, now)
        except Exception as exc:
            notice.failed(exc)
            await asyncio.sleep(min(2 ** (notice.failures - 1), interval))
            continue
        notice.succeeded()
        if applied:
            log.info("member directory synced", extra={"applied": applied, "service": ctx.name})
        await asyncio.sleep(interval)
