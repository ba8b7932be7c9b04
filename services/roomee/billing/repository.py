"""All SQL of the billing service."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.billing.models import billing_customer, subscription, webhook_event


async def insert_unless_conflict(session: AsyncSession, table: sa.Table, values: dict[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING: False when a unique key already holds the row.

    A concurrent uncommitted insert of the same key makes this wait for its outcome (no savepoint:
    pysqlite would commit at the savepoint's release).
    """
    dialect = sqlite if session.bind.dialect.name == "sqlite" else postgresql
    result = await session.execute(dialect.insert(table).values(**values).on_conflict_do_nothing())
    return result.rowcount == 1


class SubscriptionRepository:
    def __init__(self, session: AsyncSession, *, lock_rows: bool) -> None:
        self.session = session
        # PostgreSQL: FOR UPDATE serialises writers of one hotel across replicas. SQLite serves one
        # process, where the service's per-hotel lock does.
        self.lock_rows = lock_rows

    async def insert_if_none_live(self, values: dict[str, Any]) -> bool:
        """Insert a live subscription unless the hotel has one; waits for a concurrent insert to finish."""
        return await insert_unless_conflict(self.session, subscription, values)

    async def live_for_customer(self, customer_id: str) -> dict | None:
        query = sa.select(subscription).where(subscription.c.customer_id == customer_id, subscription.c.ended_at.is_(None))
        return await self._one(query)

    async def latest_for_customer(self, customer_id: str) -> dict | None:
        """The live subscription, else the one that ended last."""
        query = (
            sa.select(subscription)
            .where(subscription.c.customer_id == customer_id)
            .order_by(subscription.c.ended_at.is_not(None), subscription.c.created_at.desc(), subscription.c.id)
            .limit(1)
        )
        return await self._one(query)

    async def latest_ended_for_customer(self, customer_id: str) -> dict | None:
        query = (
            sa.select(subscription)
            .where(subscription.c.customer_id == customer_id, subscription.c.ended_at.is_not(None))
            .order_by(subscription.c.ended_at.desc())
            .limit(1)
        )
        return await self._one(query)

    async def by_external_id(self, external_id: str) -> dict | None:
        return await self._one(sa.select(subscription).where(subscription.c.external_id == external_id))

    async def update(self, subscription_id: str, values: dict[str, Any]) -> None:
        await self.session.execute(sa.update(subscription).where(subscription.c.id == subscription_id).values(**values))

    async def forget_contact(self, customer_id: str) -> None:
        """Drop the contact details kept with a closed hotel's subscriptions (name, email)."""
        await self.session.execute(
            sa.update(subscription).where(subscription.c.customer_id == customer_id).values(email=None, name=None)
        )

    async def external_customer_ids(self, customer_id: str) -> list[str]:
        rows = await self.session.execute(
            sa.select(subscription.c.external_customer_id).distinct()
            .where(subscription.c.customer_id == customer_id, subscription.c.external_customer_id.is_not(None))
        )
        return list(rows.scalars())

    async def _one(self, query) -> dict | None:
        if self.lock_rows:
            query = query.with_for_update()
        row = (await self.session.execute(query)).mappings().first()
        return dict(row) if row else None


class CustomerRepository:
    """A hotel's closure (its tombstone) and, on PostgreSQL, the row that serialises its writers."""

    def __init__(self, session: AsyncSession, *, lock_rows: bool) -> None:
        self.session = session
        self.lock_rows = lock_rows

    async def hold(self, customer_id: str) -> dict | None:
        """The hotel's closure row. PostgreSQL: created if missing and locked until the commit, so an
        assign and a close of one hotel never interleave across replicas (SQLite serves one process,
        where the service's per-hotel lock does; no write here keeps SQLite's single lock free)."""
        query = sa.select(billing_customer).where(billing_customer.c.customer_id == customer_id)
        if self.lock_rows:
            await insert_unless_conflict(self.session, billing_customer, {"customer_id": customer_id})
            query = query.with_for_update()
        row = (await self.session.execute(query)).mappings().first()
        return dict(row) if row else None

    async def close(self, customer_id: str, generation: int | None, now) -> dict:
        """Record the closure: generations up to ``generation`` (None: every one, for good)."""
        found = await self.hold(customer_id)
        if found is None:
            await insert_unless_conflict(self.session, billing_customer, {"customer_id": customer_id})
            found = {"closed_generation": None, "closed_for_good": False}
        closed_generation = found["closed_generation"]
        if generation is not None:
            closed_generation = max(generation, closed_generation if closed_generation is not None else generation)
        values = {"closed_generation": closed_generation, "closed_for_good": found["closed_for_good"] or generation is None,
                  "closed_at": now}
        await self.session.execute(
            sa.update(billing_customer).where(billing_customer.c.customer_id == customer_id).values(**values)
        )
        return {"customer_id": customer_id, **values}


class WebhookEventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record_once(self, values: dict[str, Any]) -> bool:
        """Remember an event id; False when it was already handled (a concurrent delivery waits here)."""
        return await insert_unless_conflict(self.session, webhook_event, values)

    async def delete_received_before(self, cutoff) -> int:
        result = await self.session.execute(sa.delete(webhook_event).where(webhook_event.c.received_at < cutoff))
        return result.rowcount or 0

    async def set_outcome(self, event_id: str, outcome: str) -> None:
        await self.session.execute(sa.update(webhook_event).where(webhook_event.c.id == event_id).values(outcome=outcome))
