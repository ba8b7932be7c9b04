"""All SQL of the hotel service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.events.tables import outbox_table
from roomee.hotel.models import hotel, idempotency_key


class HotelRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock(self) -> None:
        await take_write_lock(self.session, hotel)

    async def insert(self, values: dict[str, Any]) -> None:
        await self.session.execute(sa.insert(hotel).values(**values))

    async def get(self, hotel_id: str, *, include_deleted: bool = False) -> dict | None:
        query = sa.select(hotel).where(hotel.c.id == hotel_id)
        if not include_deleted:
            query = query.where(hotel.c.deleted_at.is_(None))
        found = (await self.session.execute(query)).mappings().first()
        return dict(found) if found else None

    async def update(self, hotel_id: str, values: dict[str, Any]) -> None:
        await self.session.execute(sa.update(hotel).where(hotel.c.id == hotel_id).values(**values))

    async def page(self, *, after: tuple[datetime, str] | None, limit: int, status: str | None) -> list[dict]:
        query = sa.select(hotel).where(hotel.c.deleted_at.is_(None))
        if status:
            query = query.where(hotel.c.status == status)
        if after is not None:
            created_at, hotel_id = after
            query = query.where(sa.or_(hotel.c.created_at > created_at,
                                       sa.and_(hotel.c.created_at == created_at, hotel.c.id > hotel_id)))
        rows = await self.session.execute(query.order_by(hotel.c.created_at, hotel.c.id).limit(limit))
        return [dict(r) for r in rows.mappings()]


async def take_write_lock(session: AsyncSession, table: sa.Table) -> None:
    """SQLite: a transaction that reads before it writes fails at once ("database is locked") when
    another commits in between; writing first takes the lock up front (a no-op on PostgreSQL)."""
    if session.get_bind().dialect.name == "sqlite":
        first = next(iter(table.primary_key.columns))
        await session.execute(sa.update(table).where(sa.false()).values({first.name: first}))


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock(self) -> None:
        await take_write_lock(self.session, idempotency_key)

    async def get(self, caller: str, key: str, *, for_update: bool = False) -> dict | None:
        query = sa.select(idempotency_key).where(idempotency_key.c.caller == caller, idempotency_key.c.key == key)
        if for_update:  # PostgreSQL: a delete of the key and the add it races with take turns
            query = query.with_for_update()
        found = (await self.session.execute(query)).mappings().first()
        return dict(found) if found else None

    async def insert(self, values: dict[str, Any]) -> None:
        await self.session.execute(sa.insert(idempotency_key).values(**values))

    async def update(self, caller: str, key: str, values: dict[str, Any]) -> None:
        await self.session.execute(
            sa.update(idempotency_key)
            .where(idempotency_key.c.caller == caller, idempotency_key.c.key == key)
            .values(**values)
        )

    async def delete(self, caller: str, key: str) -> None:
        await self.session.execute(
            sa.delete(idempotency_key).where(idempotency_key.c.caller == caller, idempotency_key.c.key == key)
        )

    async def purge_expired(self, now: datetime) -> int:
        result = await self.session.execute(sa.delete(idempotency_key).where(idempotency_key.c.expires_at < now))
        return result.rowcount or 0


async def retract_unpublished_event(session: AsyncSession, event_id: str) -> bool:
    """Delete an event still waiting in this service's outbox (True if it had not been published).

    The outbox body is the envelope's JSON, whose first member is its ``id``."""
    result = await session.execute(
        sa.delete(outbox_table).where(
            outbox_table.c.published_at.is_(None),
            outbox_table.c.body.like(f'{{"id":"{event_id}"%'),
        )
    )
    return bool(result.rowcount)
