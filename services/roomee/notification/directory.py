"""The local member directory (name, email, locale, timezone of each member), kept in sync with the
members service: ``POST /members/sync`` at start and every ``members_sync_interval_seconds``
(resuming from the stored cursor), and the ``member.*`` / ``workspace.*`` events as they arrive.

A row changes only when the incoming data is not older than what is stored, so a slow sync page
cannot undo a newer event.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.clock import as_utc
from roomee.kit.events.envelope import parse_timestamp
from roomee.kit.http import raise_for_status
from roomee.kit.platform import ServiceContext
from roomee.notification import clock
from roomee.notification.repository import DirectoryRepository

log = logging.getLogger("roomee.notification.directory")

SYNC_CURSOR = "members"
SYNC_PAGE = 1000


def _name(first: Any, last: Any) -> str:
    return " ".join(str(part).strip() for part in (first, last) if part and str(part).strip())


def _when(envelope: dict[str, Any], fallback: datetime) -> datetime:
    stamp = (envelope.get("metadata") or {}).get("timestamp")
    try:
        return parse_timestamp(stamp) if stamp else fallback
    except ValueError:
        return fallback


async def apply_event(session: AsyncSession, envelope: dict[str, Any], now: datetime) -> None:
    """Update the directory from a ``member.*`` or ``workspace.*`` event (others are ignored)."""
    event_type = envelope.get("type") or ""
    payload = envelope.get("payload") or {}
    when = _when(envelope, now)
    repo = DirectoryRepository(session)
    workspace_id = envelope.get("workspaceId")
    if event_type in ("member.created", "member.updated", "member.deleted"):
        member = payload.get("member") or {}
        if not member.get("id") or not workspace_id:
            return
        await repo.upsert_members(
            [
                {
                    "member_id": member["id"],
                    "workspace_id": workspace_id,
                    "ecosystem_id": envelope.get("ecosystemId"),
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
        await repo.upsert_members(
            [
                {
                    "member_id": member["id"],
                    "workspace_id": workspace_id,
                    "ecosystem_id": envelope.get("ecosystemId"),
                    "user_id": member.get("userId"),
                    "name": member.get("name") or "",
                    "email": member.get("email"),
                    "deleted_at": None,
                    "updated_at": when,
                }
            ],
            columns=("workspace_id", "ecosystem_id", "user_id", "name", "email", "deleted_at"),
        )
    elif event_type.startswith("workspace.") and workspace_id:
        await repo.upsert_workspace(
            {
                "workspace_id": workspace_id,
                "ecosystem_id": envelope.get("ecosystemId") or payload.get("ecosystemId"),
                "name": payload.get("name") or envelope.get("workspaceName"),
                "locale": payload.get("locale"),
                "timezone": payload.get("timezone"),
                "deleted_at": when if event_type == "workspace.deleted" else None,
                "updated_at": when,
            }
        )
        if event_type == "workspace.deleted":
            await repo.mark_members_deleted([str(i) for i in payload.get("removedMemberIds") or ()], when)


def _synced_row(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "member_id": item["id"],
        "workspace_id": item["workspaceId"],
        "ecosystem_id": item.get("ecosystemId"),
        "user_id": item.get("userId"),
        "name": _name(item.get("firstName"), item.get("lastName")),
        "email": item.get("email"),
        "locale": item.get("locale"),
        "timezone": item.get("timezone"),
        "deleted_at": as_utc(parse_timestamp(item["deletedAt"])) if item.get("deletedAt") else None,
        "updated_at": as_utc(parse_timestamp(item["updatedAt"])),
    }


async def sync_members(ctx: ServiceContext) -> int:
    """Pull every member changed since the stored cursor; return how many were applied."""
    client = ctx.client("members")
    async with ctx.db.transaction() as session:
        cursor = await DirectoryRepository(session).cursor(SYNC_CURSOR)
    applied = 0
    while True:
        response = await client.post("/members/sync", json={"cursor": cursor, "limit": SYNC_PAGE})
        raise_for_status(response)
        body = response.json()
        items = body.get("items") or []
        now = clock.now(ctx)
        async with ctx.db.transaction() as session:
            repo = DirectoryRepository(session)
            await repo.upsert_members([_synced_row(item) for item in items])
            workspaces = {
                item["workspaceId"]: {
                    "workspace_id": item["workspaceId"],
                    "ecosystem_id": item.get("ecosystemId"),
                    "name": item.get("workspaceName"),
                    "locale": item.get("workspaceLocale"),
                    "timezone": item.get("workspaceTimezone"),
                    "deleted_at": None,
                    "updated_at": now,
                }
                for item in items
            }
            await repo.add_missing_workspaces(list(workspaces.values()))
            await repo.save_cursor(SYNC_CURSOR, body.get("nextCursor"), now)
        applied += len(items)
        cursor = body.get("nextCursor")
        if len(items) < SYNC_PAGE or not cursor:
            return applied


async def sync_worker(ctx: ServiceContext) -> None:
    """Sync at start, then every ``members_sync_interval_seconds``; retry sooner after a failure."""
    interval = max(ctx.settings.members_sync_interval_seconds, 1.0)
    failures = 0
    while True:
        try:
            applied = await sync_members(ctx)
        except Exception as exc:
            failures += 1
            # The first failures are expected while the platform is still starting.
            log.log(
                logging.WARNING if failures >= 3 else logging.INFO,
                "member directory sync failed (%s: %s); retrying",
                type(exc).__name__,
                exc,
            )
            await asyncio.sleep(min(2 ** (failures - 1), interval))
            continue
        failures = 0
        if applied:
            log.info("member directory synced", extra={"applied": applied})
        await asyncio.sleep(interval)
