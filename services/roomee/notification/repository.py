"""All SQL of the notification service.

Fan-out is bulk: receivers are written with one statement (``COPY`` when many, on PostgreSQL),
counters with one upsert, and lookups for a set of members are one query whatever its size (the ids travel as
one array parameter on PostgreSQL, one JSON parameter on SQLite). Every member query filters on
the member and the workspace (tenant isolation).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.directory import DirectoryStore
from roomee.kit.repository import Repository
from roomee.notification.models import (
    DIRECTORY_TABLES,
    deferred_delivery,
    delivery_attempt,
    member_directory,
    notification,
    notification_preference,
    notification_receiver,
    push_subscription,
    unread_counter,
)

RECEIVER_COLUMNS = ("notification_id", "member_id", "workspace_id", "locale", "channels", "created_at")
# Receiver rows from which PostgreSQL gets them by COPY (a fan-out); fewer (a batch of small events)
# go in one INSERT with array parameters, which takes one round trip where COPY takes several.
COPY_AT = 1000
_WHEN = sa.DateTime(timezone=True)


def _inbox_rows() -> sa.Select:
    """A member's receiver rows with their notification (the inbox's columns), not yet filtered."""
    return (
        sa.select(
            notification_receiver.c.notification_id.label("id"),
            notification_receiver.c.read_at,
            notification_receiver.c.created_at,
            notification_receiver.c.locale,
            notification.c.workspace_id,
            notification.c.type,
            notification.c.category,
            notification.c.renders,
            notification.c.data,
            notification.c.actor_id,
            notification.c.actor_name,
            notification.c.actor_type,
        )
        .join(notification, notification.c.id == notification_receiver.c.notification_id)
    )


@functools.cache
def _inbox_page(unread_only: bool, before_cursor: bool) -> sa.Select:
    """A page of a member's inbox, newest first, built once per shape (bound parameters: a hot read
    compiles it once, see roomee.kit.hot)."""
    r = notification_receiver.c
    query = _inbox_rows().where(r.member_id == sa.bindparam("member_id"), r.workspace_id == sa.bindparam("workspace_id"))
    if unread_only:
        query = query.where(r.read_at.is_(None))
    if before_cursor:
        created_at = sa.bindparam("before_created_at", type_=r.created_at.type)
        query = query.where(sa.or_(r.created_at < created_at, sa.and_(
            r.created_at == created_at, r.notification_id < sa.bindparam("before_id"))))
    return query.order_by(r.created_at.desc(), r.notification_id.desc()).limit(sa.bindparam("limit"))


_COUNTER = sa.select(unread_counter.c.count).where(
    unread_counter.c.member_id == sa.bindparam("member_id"), unread_counter.c.workspace_id == sa.bindparam("workspace_id"))
_PREFERENCES = sa.select(notification_preference).where(
    notification_preference.c.member_id == sa.bindparam("member_id"),
    notification_preference.c.workspace_id == sa.bindparam("workspace_id"))
_SUBSCRIPTIONS = (
    sa.select(push_subscription)
    .where(push_subscription.c.member_id == sa.bindparam("member_id"),
           push_subscription.c.workspace_id == sa.bindparam("workspace_id"))
    .order_by(push_subscription.c.created_at, push_subscription.c.id)
)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass(frozen=True)
class CounterDrift:
    """What a bulk recount found: the counters in scope (a member with unread receiver rows but no
    counter row counts as one), and how many of them did not equal their unread receiver rows."""

    counters: int
    drifted: int


class NotificationRepository(Repository):
    async def insert_many(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        """Insert several notifications in one statement; the ids of those that were new."""
        if not rows:
            return set()
        if self.is_postgres:
            columns, select = self._unnest(notification, rows)
            stmt = self._insert(notification).from_select(columns, select)
            result = await self.session.execute(stmt.on_conflict_do_nothing().returning(notification.c.id))
        else:
            # Rows as executemany parameters: the statement compiles once and stays cached (a
            # VALUES list compiles anew for every batch size: 16 ms for 125 notifications).
            result = await self.session.execute(
                self._insert(notification).on_conflict_do_nothing().returning(notification.c.id), list(rows)
            )
        return set(result.scalars())

    async def add_receivers(
        self, created_at: datetime, receivers: Sequence[tuple[str, str, str, str, str]]
    ) -> dict[tuple[str, str], int]:
        """Write the receiver rows ``(notification_id, member_id, workspace_id, locale, channels)``
        of one or several notifications and add them to their members' unread counters; the new
        count of each ``(member_id, workspace_id)``.

        Two statements whatever the number of receivers. On PostgreSQL a large set is loaded with
        ``COPY`` (no SQL to parse, no parameter per value); a small one travels as arrays. The
        counters are bumped from the rows written, grouped so a member receiving several
        notifications of the batch gets one increment of that many, in (member, workspace) order,
        so concurrent writers lock counter rows in one order.
        """
        if not receivers:
            return {}
        if self.is_postgres and len(receivers) >= COPY_AT:
            await self._copy(notification_receiver, RECEIVER_COLUMNS,
                             [(*receiver, created_at) for receiver in receivers])
        else:
            await self.session.execute(
                sa.insert(notification_receiver).from_select(
                    RECEIVER_COLUMNS,
                    sa.select(*self._text_columns(receivers, 5), sa.bindparam("when", created_at, type_=_WHEN)),
                )
            )
        # Counted from the rows just written (in this transaction's buffers) rather than from the
        # ids sent again as arrays: for 10 000 receivers 49 ms best / 80 ms median against 58 / 87
        # ms. One notification's receivers are distinct members: no grouping needed.
        r = notification_receiver.c
        notification_ids = list(dict.fromkeys(receiver[0] for receiver in receivers))
        one = len(notification_ids) == 1
        added = sa.select(
            r.member_id, r.workspace_id, sa.literal(1) if one else sa.func.count(),
            sa.bindparam("when", created_at, type_=_WHEN),
        )
        if one:
            added = added.where(r.notification_id == notification_ids[0])
        else:
            added = added.where(self._one_of(r.notification_id, notification_ids)).group_by(r.member_id, r.workspace_id)
        c = unread_counter.c
        stmt = self._insert(unread_counter).from_select(
            ["member_id", "workspace_id", "count", "updated_at"], added.order_by(r.member_id, r.workspace_id)
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[c.member_id, c.workspace_id],
            set_={"count": c.count + stmt.excluded.count, "updated_at": stmt.excluded.updated_at},
        ).returning(c.member_id, c.workspace_id, c.count)
        return {(m, w): n for m, w, n in (await self.session.execute(stmt)).all()}

    async def get(self, notification_id: str) -> dict | None:
        row = (await self.session.execute(sa.select(notification).where(notification.c.id == notification_id))).mappings().first()
        return dict(row) if row else None

    async def get_many(self, ids: Iterable[str]) -> dict[str, dict]:
        rows = await self.session.execute(sa.select(notification).where(self._one_of(notification.c.id, ids)))
        return {row["id"]: dict(row) for row in rows.mappings()}

    # -- a member's inbox ------------------------------------------------------------------

    def _inbox(self, member_id: str, workspace_id: str):
        return _inbox_rows().where(
            notification_receiver.c.member_id == member_id, notification_receiver.c.workspace_id == workspace_id)

    async def page_inbox(
        self, member_id: str, workspace_id: str, *, before: tuple[datetime, str] | None, limit: int, unread_only: bool
    ) -> list[dict]:
        values = {"member_id": member_id, "workspace_id": workspace_id, "limit": limit}
        if before is not None:
            values["before_created_at"], values["before_id"] = before
        rows = await self.session.execute(_inbox_page(unread_only, before is not None), values)
        return [dict(row) for row in rows.mappings()]

    async def inbox_after(
        self, member_id: str, workspace_id: str, after: tuple[datetime, str], *, limit: int
    ) -> list[dict]:
        """A member's notifications stored after the position ``(created_at, notification_id)``,
        oldest first (Socket.IO connection state recovery replays them; the inbox index serves it)."""
        r = notification_receiver.c
        created_at, notification_id = after
        query = self._inbox(member_id, workspace_id).where(
            sa.or_(r.created_at > created_at, sa.and_(r.created_at == created_at, r.notification_id > notification_id))
        ).order_by(r.created_at, r.notification_id).limit(limit)
        return [dict(row) for row in (await self.session.execute(query)).mappings()]

    async def in_inbox(self, notification_id: str, member_id: str, workspace_id: str) -> dict | None:
        query = self._inbox(member_id, workspace_id).where(notification_receiver.c.notification_id == notification_id)
        row = (await self.session.execute(query)).mappings().first()
        return dict(row) if row else None

    async def mark_read(self, notification_id: str, member_id: str, workspace_id: str, when: datetime) -> bool:
        """Mark one unread receiver row read; False when it was read already (or is not there)."""
        result = await self.session.execute(
            sa.update(notification_receiver)
            .where(
                notification_receiver.c.notification_id == notification_id,
                notification_receiver.c.member_id == member_id,
                notification_receiver.c.workspace_id == workspace_id,
                notification_receiver.c.read_at.is_(None),
            )
            .values(read_at=when)
        )
        return (result.rowcount or 0) > 0

    async def mark_all_read(self, member_id: str, workspace_id: str, when: datetime) -> int:
        result = await self.session.execute(
            sa.update(notification_receiver)
            .where(
                notification_receiver.c.member_id == member_id,
                notification_receiver.c.workspace_id == workspace_id,
                notification_receiver.c.read_at.is_(None),
            )
            .values(read_at=when)
        )
        return result.rowcount or 0

    # -- unread counters ---------------------------------------------------------------------

    async def decrement_counter(self, member_id: str, workspace_id: str, by: int, when: datetime) -> int:
        result = await self.session.execute(
            sa.update(unread_counter)
            .where(unread_counter.c.member_id == member_id, unread_counter.c.workspace_id == workspace_id)
            .values(count=unread_counter.c.count - by, updated_at=when)
            .returning(unread_counter.c.count)
        )
        value = result.scalar_one_or_none()
        return int(value) if value is not None else 0

    async def counter(self, member_id: str, workspace_id: str) -> int:
        result = await self.session.execute(_COUNTER, {"member_id": member_id, "workspace_id": workspace_id})
        value = result.scalar_one_or_none()
        return int(value) if value is not None else 0

    async def recount(self, *, workspace_id: str, when: datetime) -> list[tuple[str, str, int, int]]:
        """Set one workspace's counters to the number of unread receiver rows; the
        (member, workspace, old, new) changed, for the sockets to be told.

        The counter rows in scope are locked first (PostgreSQL), so a fan-out or a read running
        at the same time either finished before the count or applies its delta after it.
        """
        c = unread_counter.c
        locked = sa.select(c.member_id, c.workspace_id, c.count).where(c.workspace_id == workspace_id)
        if self.is_postgres:
            locked = locked.with_for_update()
        else:
            # SQLite: take the write lock before reading, so nothing commits between count and write.
            await self.session.execute(sa.update(unread_counter).where(sa.false()).values(count=c.count))
        current = {(m, w): count for m, w, count in (await self.session.execute(locked)).all()}
        actual = {(m, w): n for m, w, n in (await self.session.execute(self._unread_by_member(workspace_id))).all()}
        changed = []
        for key in sorted(set(current) | set(actual)):
            old, new = current.get(key), actual.get(key, 0)
            if old != new:
                changed.append((key[0], key[1], old if old is not None else 0, new))
        if changed:
            # executemany parameters: SQLAlchemy cuts them into statements under the driver's
            # parameter limit (a VALUES list of 8 192 counters would exceed PostgreSQL's 32 767).
            stmt = self._insert(unread_counter)
            await self.session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[unread_counter.c.member_id, unread_counter.c.workspace_id],
                    set_={"count": stmt.excluded.count, "updated_at": stmt.excluded.updated_at},
                ),
                [{"member_id": m, "workspace_id": w, "count": new, "updated_at": when} for m, w, _, new in changed],
            )
        return changed

    def _unread_by_member(self, workspace_id: str | None):
        """``(member_id, workspace_id, unread)`` of every member with unread receiver rows."""
        r = notification_receiver.c
        query = (
            sa.select(r.member_id, r.workspace_id, sa.func.count().label("unread"))
            .where(r.read_at.is_(None))
            .group_by(r.member_id, r.workspace_id)
        )
        return query.where(r.workspace_id == workspace_id) if workspace_id is not None else query

    async def counter_drift(self, *, workspace_id: str | None) -> CounterDrift:
        """Compare the counters (of one workspace, or all) with the unread receiver rows, in one
        statement whatever the number of members; changes nothing."""
        c = unread_counter.c
        unread = self._unread_by_member(workspace_id).cte("unread")
        same_member = sa.and_(unread.c.member_id == c.member_id, unread.c.workspace_id == c.workspace_id)
        stored = sa.select(
            sa.case((c.count != sa.func.coalesce(unread.c.unread, 0), 1), else_=0).label("drifted")
        ).select_from(unread_counter.outerjoin(unread, same_member))
        if workspace_id is not None:
            stored = stored.where(c.workspace_id == workspace_id)
        # Reading a missing counter answers 0, so a member with unread rows and no counter row has drifted.
        missing = (
            sa.select(sa.literal(1).label("drifted"))
            .select_from(unread.outerjoin(unread_counter, same_member))
            .where(c.member_id.is_(None))
        )
        compared = sa.union_all(stored, missing).subquery("compared")
        counters, drifted = (
            await self.session.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(compared.c.drifted), 0))
            )
        ).one()
        return CounterDrift(counters=int(counters), drifted=int(drifted))

    async def recount_in_bulk(self, *, workspace_id: str | None, when: datetime) -> CounterDrift:
        """Set the counters (of one workspace, or all) to the number of unread receiver rows with a
        fixed number of set-based statements, however many members there are; returns the drift
        found before the fix.

        Unlike ``recount`` it neither loads the counters nor sends them back one row each, so it
        holds for the whole database. The counter rows in scope are locked first, in the order
        fan-outs lock them (PostgreSQL; SQLite takes its write lock), so a delivery or read running
        at the same time either committed before the count or applies its delta after it.
        """
        c = unread_counter.c
        in_scope = c.workspace_id == workspace_id if workspace_id is not None else sa.true()
        if self.is_postgres:
            # Counted in the database: locking needs no row sent to the client.
            locking = (
                sa.select(c.member_id).where(in_scope).order_by(c.member_id, c.workspace_id).with_for_update()
            ).subquery("locking")
            await self.session.execute(sa.select(sa.func.count()).select_from(locking))
        else:
            # Any write takes SQLite's write lock, even one that matches no row.
            await self.session.execute(sa.update(unread_counter).where(sa.false()).values(count=c.count))
        drift = await self.counter_drift(workspace_id=workspace_id)
        if not drift.drifted:
            return drift
        updated_at = sa.bindparam("when", when, type_=sa.DateTime(timezone=True)).label("updated_at")
        actual = self._unread_by_member(workspace_id).add_columns(updated_at).order_by(
            notification_receiver.c.member_id, notification_receiver.c.workspace_id
        )
        upsert = self._insert(unread_counter).from_select(["member_id", "workspace_id", "count", "updated_at"], actual)
        await self.session.execute(
            upsert.on_conflict_do_update(
                index_elements=[c.member_id, c.workspace_id],
                set_={"count": upsert.excluded.count, "updated_at": upsert.excluded.updated_at},
                where=c.count != upsert.excluded.count,
            )
        )
        r = notification_receiver.c
        has_unread = sa.exists().where(
            r.member_id == c.member_id, r.workspace_id == c.workspace_id, r.read_at.is_(None)
        )
        await self.session.execute(
            sa.update(unread_counter).where(in_scope, c.count != 0, ~has_unread).values(count=0, updated_at=when)
        )
        return drift

    # -- deferred deliveries -----------------------------------------------------------------

    async def insert_deferred(self, rows: Sequence[dict[str, Any]]) -> None:
        """Deferred deliveries as executemany parameters, a few thousand rows per statement."""
        for chunk in chunks(rows, 4000):
            await self.session.execute(self._insert(deferred_delivery).on_conflict_do_nothing(), list(chunk))

    async def due_deferred(self, now: datetime, limit: int) -> list[dict]:
        query = (
            sa.select(deferred_delivery)
            .where(deferred_delivery.c.released_at.is_(None), deferred_delivery.c.release_at <= now)
            .order_by(deferred_delivery.c.release_at, deferred_delivery.c.id)
            .limit(limit)
        )
        if self.is_postgres:
            query = query.with_for_update(skip_locked=True)
        return [dict(row) for row in (await self.session.execute(query)).mappings()]

    async def mark_released(self, ids: Sequence[str], when: datetime) -> None:
        await self.session.execute(
            sa.update(deferred_delivery).where(self._one_of(deferred_delivery.c.id, ids)).values(released_at=when)
        )


class AttemptRepository(Repository):
    async def insert_many(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.is_postgres:  # one prepared statement whatever the batch size
            columns, select = self._unnest(delivery_attempt, rows)
            await self.session.execute(sa.insert(delivery_attempt).from_select(columns, select))
        else:
            await self.session.execute(sa.insert(delivery_attempt), list(rows))

    async def histories(self, job_ids: Sequence[str]) -> dict[str, tuple[int, set[tuple[str, str]]]]:
        """For each delivery job with earlier attempts: its last attempt number and the
        ``(notification id, recipient)`` pairs it already reached (one query for all the jobs)."""
        if not job_ids:
            return {}
        rows = await self.session.execute(
            sa.select(
                delivery_attempt.c.job_id, delivery_attempt.c.notification_id, delivery_attempt.c.attempt,
                delivery_attempt.c.status, delivery_attempt.c.recipients,
            ).where(self._one_of(delivery_attempt.c.job_id, job_ids))
        )
        histories: dict[str, tuple[int, set[tuple[str, str]]]] = {}
        for job_id, notification_id, attempt, status, recipients in rows.all():
            last, reached = histories.get(job_id, (0, set()))
            if status in ("sent", "logged"):
                reached.update((notification_id, r) for r in recipients or ())
            histories[job_id] = (max(last, attempt), reached)
        return histories

    async def for_notification(self, notification_id: str) -> list[dict]:
        rows = await self.session.execute(
            sa.select(delivery_attempt)
            .where(delivery_attempt.c.notification_id == notification_id)
            .order_by(delivery_attempt.c.created_at, delivery_attempt.c.id)
        )
        return [dict(row) for row in rows.mappings()]


class PreferenceRepository(Repository):
    async def get(self, member_id: str, workspace_id: str) -> dict | None:
        row = (await self.session.execute(_PREFERENCES, {"member_id": member_id, "workspace_id": workspace_id})
               ).mappings().first()
        return dict(row) if row else None

    async def upsert(self, row: dict[str, Any]) -> None:
        stmt = self._insert(notification_preference).values(**row)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[notification_preference.c.member_id, notification_preference.c.workspace_id],
                set_={key: stmt.excluded[key] for key in row if key not in ("member_id", "workspace_id")},
            )
        )


class SubscriptionRepository(Repository):
    """Device registrations, one per (workspace, member, OneSignal subscription id)."""

    async def registration(self, workspace_id: str, member_id: str, subscription_id: str) -> dict | None:
        row = (
            await self.session.execute(
                sa.select(push_subscription).where(
                    push_subscription.c.workspace_id == workspace_id,
                    push_subscription.c.member_id == member_id,
                    push_subscription.c.subscription_id == subscription_id,
                )
            )
        ).mappings().first()
        return dict(row) if row else None

    async def upsert(self, row: dict[str, Any]) -> None:
        """Insert, or update the member's registration of this device in this workspace."""
        stmt = self._insert(push_subscription).values(**row)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[push_subscription.c.workspace_id, push_subscription.c.member_id,
                                push_subscription.c.subscription_id],
                set_={
                    "user_id": stmt.excluded.user_id,
                    "platform": stmt.excluded.platform,
                    "is_active": stmt.excluded.is_active,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
        )

    async def forget_elsewhere(self, user_id: str, subscription_id: str, workspace_id: str) -> None:
        """The account's own registrations of this device in its other workspaces (the device moved)."""
        await self.session.execute(
            sa.delete(push_subscription).where(
                push_subscription.c.user_id == user_id,
                push_subscription.c.subscription_id == subscription_id,
                push_subscription.c.workspace_id != workspace_id,
            )
        )

    async def list_for(self, member_id: str, workspace_id: str) -> list[dict]:
        rows = await self.session.execute(_SUBSCRIPTIONS, {"member_id": member_id, "workspace_id": workspace_id})
        return [dict(row) for row in rows.mappings()]

    async def delete(self, subscription_id: str, member_id: str, workspace_id: str) -> bool:
        result = await self.session.execute(
            sa.delete(push_subscription).where(
                push_subscription.c.subscription_id == subscription_id,
                push_subscription.c.member_id == member_id,
                push_subscription.c.workspace_id == workspace_id,
            )
        )
        return (result.rowcount or 0) > 0

    async def deactivate(self, subscription_ids: Sequence[str], when: datetime) -> None:
        """Stop pushing to subscriptions the provider reported invalid or unsubscribed."""
        if subscription_ids:
            await self.session.execute(
                sa.update(push_subscription)
                .where(self._one_of(push_subscription.c.subscription_id, subscription_ids))
                .values(is_active=False, updated_at=when)
            )

    async def active_for(self, member_ids: Sequence[str], workspace_id: str) -> list[tuple[str, str]]:
        """(member id, subscription id) of the active devices registered for this workspace."""
        rows = await self.session.execute(
            sa.select(push_subscription.c.member_id, push_subscription.c.subscription_id)
            .where(
                push_subscription.c.workspace_id == workspace_id,
                push_subscription.c.is_active.is_(True),
                self._one_of(push_subscription.c.member_id, member_ids),
            )
            .order_by(push_subscription.c.member_id, push_subscription.c.subscription_id)
        )
        return [(m, s) for m, s in rows.all()]


class DirectoryRepository(Repository, DirectoryStore):
    """The kit's directory store on this service's tables, with a bulk lookup for fan-outs."""

    def __init__(self, session: AsyncSession) -> None:
        DirectoryStore.__init__(self, session, DIRECTORY_TABLES)

    async def mark_members_deleted(self, member_ids: Sequence[str], when: datetime) -> None:
        if member_ids:
            await self.session.execute(
                sa.update(member_directory)
                .where(self._one_of(member_directory.c.member_id, member_ids), member_directory.c.updated_at <= when)
                .values(deleted_at=when, updated_at=when)
            )

    async def members(self, member_ids: Sequence[str]) -> dict[str, sa.Row]:
        """What delivering to these members needs, by member id, in one query: rows with
        ``workspace_id``, ``name``, ``email``, ``locale``, ``timezone``, ``deleted_at``, and the
        member's preferences in that workspace (``has_preferences`` and the columns
        ``Preferences.from_row`` reads; see ``preferences_of``)."""
        d, p = member_directory.c, notification_preference.c
        result = await self.session.execute(
            sa.select(
                d.member_id, d.workspace_id, d.name, d.email, d.locale, d.timezone, d.deleted_at,
                p.member_id.is_not(None).label("has_preferences"),
                *(p[name] for name in PREFERENCE_COLUMNS),
            )
            .select_from(
                member_directory.outerjoin(
                    notification_preference, sa.and_(p.member_id == d.member_id, p.workspace_id == d.workspace_id)
                )
            )
            .where(self._one_of(d.member_id, member_ids))
        )
        return {row.member_id: row for row in result.all()}


# What ``DirectoryRepository.members`` reads of a member's preferences.
PREFERENCE_COLUMNS = ("is_global_silent", "category_prefs", "quiet_start", "quiet_end", "quiet_timezone", "quiet_mode")


def preferences_of(entry: sa.Row) -> dict[str, Any] | None:
    """The preference row within a ``DirectoryRepository.members`` entry (None: the defaults)."""
    return {name: getattr(entry, name) for name in PREFERENCE_COLUMNS} if entry.has_preferences else None
