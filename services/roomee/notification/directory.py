"""The notification service's member directory: the kit's directory (``roomee.kit.directory``:
``POST /members/sync`` at start and every ``members_sync_interval_seconds``, and the ``member.*`` /
``workspace.*`` events) kept in this service's tables through its ``DirectoryRepository``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit import directory
from roomee.kit.directory import SYNC_CURSOR, SYNC_PAGE  # noqa: F401  (re-exported for callers and tests)
from roomee.kit.platform import ServiceContext
from roomee.notification import clock
from roomee.notification.repository import DirectoryRepository


async def apply_event(session: AsyncSession, envelope: dict[str, Any], now: datetime) -> None:
    """Update the directory from a ``member.*`` or ``workspace.*`` event (others are ignored)."""
    await directory.apply_event(DirectoryRepository(session), envelope, now)


async def resolve_members(ctx: ServiceContext, session: AsyncSession, member_ids: list[str], now: datetime) -> None:
    """Look up receivers the directory does not know through the members service."""
    await directory.resolve_members(ctx, DirectoryRepository(session), member_ids, now)


async def sync_members(ctx: ServiceContext) -> int:
    """Pull every member changed since the stored cursor; return how many were applied."""
    return await directory.sync_members(ctx, DirectoryRepository, lambda: clock.now(ctx))


async def sync_worker(ctx: ServiceContext) -> None:
    await directory.sync_worker(ctx, DirectoryRepository, lambda: clock.now(ctx))
