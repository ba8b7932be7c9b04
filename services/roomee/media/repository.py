"""All SQL of the media service. Every media query is scoped by hotel, except the sweeper's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.media.models import GONE_STATUSES, media, storage_quota


def _insert(session: AsyncSession, table: sa.Table):
    dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _floored(value):
    return sa.case((value < 0, 0), else_=value)


class QuotaRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, hotel_id: str) -> dict | None:
        row = await self.session.execute(sa.select(storage_quota).where(storage_quota.c.hotel_id == hotel_id))
        found = row.mappings().first()
        return dict(found) if found else None

    async def ensure(self, hotel_id: str, now: datetime) -> None:
        """The hotel's row, created without a quota if it has none yet."""
        statement = _insert(self.session, storage_quota).values(
            hotel_id=hotel_id, used_bytes=0, reserved_bytes=0, created_at=now, updated_at=now
        )
        await self.session.execute(statement.on_conflict_do_nothing(index_elements=["hotel_id"]))

    async def set_quota(
        self, hotel_id: str, *, quota_bytes: int, max_size: int, unit: str, set_at: datetime, now: datetime
    ) -> bool:
        """Create or change the quota, unless a newer quota event was applied already."""
        values = {"quota_bytes": quota_bytes, "max_size": max_size, "unit": unit, "quota_set_at": set_at, "updated_at": now}
        statement = _insert(self.session, storage_quota).values(
            hotel_id=hotel_id, used_bytes=0, reserved_bytes=0, created_at=now, **values
        )
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=["hotel_id"],
            set_={name: excluded[name] for name in values},
            where=sa.or_(storage_quota.c.quota_set_at.is_(None), storage_quota.c.quota_set_at <= excluded.quota_set_at),
        )
        result = await self.session.execute(statement)
        return result.rowcount == 1

    async def reserve(self, hotel_id: str, size: int, now: datetime) -> bool:
        """Hold ``size`` bytes if the quota has room for them (one conditional update: no race)."""
        result = await self.session.execute(
            sa.update(storage_quota)
            .where(
                storage_quota.c.hotel_id == hotel_id,
                storage_quota.c.quota_bytes.isnot(None),
                storage_quota.c.quota_bytes - storage_quota.c.used_bytes - storage_quota.c.reserved_bytes >= size,
            )
            .values(reserved_bytes=storage_quota.c.reserved_bytes + size, updated_at=now)
        )
        return result.rowcount == 1

    async def consume(self, hotel_id: str, size: int, now: datetime) -> bool:
        """Count ``size`` stored bytes if they fit (or if no quota is set yet)."""
        result = await self.session.execute(
            sa.update(storage_quota)
            .where(
                storage_quota.c.hotel_id == hotel_id,
                sa.or_(
                    storage_quota.c.quota_bytes.is_(None),
                    storage_quota.c.quota_bytes - storage_quota.c.used_bytes - storage_quota.c.reserved_bytes >= size,
                ),
            )
            .values(used_bytes=storage_quota.c.used_bytes + size, updated_at=now)
        )
        return result.rowcount == 1

    async def adjust(self, hotel_id: str, *, used: int = 0, reserved: int = 0, now: datetime) -> None:
        """Move the counters by the given deltas (never below zero)."""
        await self.session.execute(
            sa.update(storage_quota)
            .where(storage_quota.c.hotel_id == hotel_id)
            .values(
                used_bytes=_floored(storage_quota.c.used_bytes + used),
                reserved_bytes=_floored(storage_quota.c.reserved_bytes + reserved),
                updated_at=now,
            )
        )

    async def delete(self, hotel_id: str) -> None:
        await self.session.execute(sa.delete(storage_quota).where(storage_quota.c.hotel_id == hotel_id))


class MediaRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, values: dict[str, Any]) -> None:
        await self.session.execute(sa.insert(media).values(**values))

    async def get(self, hotel_id: str, media_id: str, *, for_update: bool = False) -> dict | None:
        query = sa.select(media).where(media.c.id == media_id, media.c.hotel_id == hotel_id)
        if for_update:
            query = query.with_for_update()
        found = (await self.session.execute(query)).mappings().first()
        return dict(found) if found else None

    async def get_any(self, media_id: str) -> dict | None:
        """A media whatever its hotel: for services and for files whose access is checked after."""
        found = (await self.session.execute(sa.select(media).where(media.c.id == media_id))).mappings().first()
        return dict(found) if found else None

    async def by_object_key(self, key: str) -> dict | None:
        found = (await self.session.execute(sa.select(media).where(media.c.object_key == key))).mappings().first()
        return dict(found) if found else None

    async def by_idempotency_key(self, hotel_id: str, key: str) -> dict | None:
        found = (
            await self.session.execute(
                sa.select(media).where(media.c.hotel_id == hotel_id, media.c.idempotency_key == key)
            )
        ).mappings().first()
        return dict(found) if found else None

    async def list_completed(self, hotel_id: str, *, after: tuple[datetime, str] | None, limit: int) -> list[dict]:
        query = sa.select(media).where(media.c.hotel_id == hotel_id, media.c.status == "completed")
        if after is not None:
            created_at, media_id = after
            query = query.where(sa.tuple_(media.c.created_at, media.c.id) < sa.tuple_(sa.literal(created_at), sa.literal(media_id)))
        rows = await self.session.execute(query.order_by(media.c.created_at.desc(), media.c.id.desc()).limit(limit))
        return [dict(r) for r in rows.mappings()]

    async def transition(self, media_id: str, *, from_status: str | tuple[str, ...], values: dict[str, Any]) -> bool:
        """Change a media only if it is still in ``from_status`` (the losing side of a race changes nothing)."""
        statuses = (from_status,) if isinstance(from_status, str) else from_status
        result = await self.session.execute(
            sa.update(media).where(media.c.id == media_id, media.c.status.in_(statuses)).values(**values)
        )
        return result.rowcount == 1

    async def delete_all_of(self, hotel_id: str, now: datetime) -> None:
        await self.session.execute(
            sa.update(media)
            .where(media.c.hotel_id == hotel_id, media.c.status.in_(("pending", "completed")))
            .values(status="deleted", deleted_at=now, idempotency_key=None, reserved_bytes=0)
        )

    async def expire_pending(self, now: datetime, limit: int) -> list[dict]:
        """Mark pending uploads past their expiry as expired; their reservations to release."""
        skip_locked = self.session.bind.dialect.name == "postgresql"
        rows = await self.session.execute(
            sa.select(media.c.id, media.c.hotel_id, media.c.reserved_bytes)
            .where(media.c.status == "pending", media.c.expires_at < now)
            .order_by(media.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=skip_locked)
        )
        expired = [dict(r) for r in rows.mappings()]
        if expired:
            await self.session.execute(
                sa.update(media)
                .where(media.c.id.in_([r["id"] for r in expired]), media.c.status == "pending")
                .values(status="expired", reason="upload_expired", deleted_at=now, reserved_bytes=0, idempotency_key=None)
            )
        return expired

    async def unpurged(self, now: datetime, limit: int) -> list[dict]:
        """Gone media whose objects may still exist, once their upload URL can no longer add one."""
        rows = await self.session.execute(
            sa.select(media.c.id, media.c.object_key, media.c.thumbnail_key, media.c.expires_at)
            .where(
                media.c.status.in_(GONE_STATUSES),
                media.c.purged_at.is_(None),
                sa.or_(media.c.expires_at.is_(None), media.c.expires_at < now),
            )
            .order_by(media.c.deleted_at)
            .limit(limit)
        )
        return [dict(r) for r in rows.mappings()]

    async def mark_purged(self, media_ids: list[str], now: datetime) -> None:
        if media_ids:
            await self.session.execute(sa.update(media).where(media.c.id.in_(media_ids)).values(purged_at=now))
