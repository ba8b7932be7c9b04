"""All SQL of the members service. Every member query is scoped by workspace or hotel."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.repository import TextArray

from roomee.members.models import change_counter, member, onboarding, workspace

_member_with_workspace = sa.select(
    member,
    workspace.c.name.label("workspace_name"),
    workspace.c.locale.label("workspace_locale"),
    workspace.c.timezone.label("workspace_timezone"),
).join(workspace, workspace.c.id == member.c.workspace_id)


# Statements built once with bound parameters (a hot read compiles each once: roomee.kit.hot).
_WORKSPACE = sa.select(workspace).where(workspace.c.id == sa.bindparam("workspace_id"))
_LIVE_WORKSPACE = _WORKSPACE.where(workspace.c.deleted_at.is_(None))
_WORKSPACES_OF_HOTEL = (
    sa.select(workspace)
    .where(workspace.c.hotel_id == sa.bindparam("hotel_id"), workspace.c.deleted_at.is_(None))
    .order_by(workspace.c.created_at, workspace.c.id)
)
_MEMBER_IN_WORKSPACE = _member_with_workspace.where(
    member.c.id == sa.bindparam("member_id"), member.c.workspace_id == sa.bindparam("workspace_id"),
    member.c.deleted_at.is_(None),
)
_WORKSPACE_IDS_OF_USER = sa.select(member.c.workspace_id).where(
    member.c.user_id == sa.bindparam("user_id"), member.c.hotel_id == sa.bindparam("hotel_id"),
    member.c.deleted_at.is_(None),
)


@functools.cache
def _workspaces_of_hotel_among(postgres: bool) -> sa.Select:
    """The hotel's live workspaces among ids bound as one parameter (``ids``: a list on PostgreSQL, a
    JSON array on SQLite): one statement whatever their number."""
    if postgres:
        among = workspace.c.id == sa.any_(sa.bindparam("ids", type_=TextArray()))
    else:
        each = sa.func.json_each(sa.bindparam("ids", type_=sa.Text)).table_valued("value")
        among = workspace.c.id.in_(sa.select(each.c.value))
    return _WORKSPACES_OF_HOTEL.where(among)


@functools.cache
def _members_of_workspace(after_cursor: bool) -> sa.Select:
    """A page of a workspace's live members by (created_at, id), built once per shape."""
    query = _member_with_workspace.where(member.c.workspace_id == sa.bindparam("workspace_id"),
                                         member.c.deleted_at.is_(None))
    if after_cursor:
        created_at = sa.bindparam("after_created_at", type_=member.c.created_at.type)
        query = query.where(sa.or_(member.c.created_at > created_at,
                                   sa.and_(member.c.created_at == created_at, member.c.id > sa.bindparam("after_id"))))
    return query.order_by(member.c.created_at, member.c.id).limit(sa.bindparam("limit"))


async def _page_by_creation(
    session: AsyncSession, query, table: sa.Table, after: tuple[datetime, str] | None, limit: int
) -> list[dict]:
    """One page of ``query`` ordered by (created_at, id), after the cursor's position."""
    if after is not None:
        created_at, row_id = after
        query = query.where(
            sa.or_(table.c.created_at > created_at, sa.and_(table.c.created_at == created_at, table.c.id > row_id))
        )
    rows = await session.execute(query.order_by(table.c.created_at, table.c.id).limit(limit))
    return [dict(r) for r in rows.mappings()]


class WorkspaceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, values: dict[str, Any]) -> None:
        await self.session.execute(sa.insert(workspace).values(**values))

    async def get(self, workspace_id: str, *, include_deleted: bool = False) -> dict | None:
        row = await self.session.execute(_WORKSPACE if include_deleted else _LIVE_WORKSPACE,
                                         {"workspace_id": workspace_id})
        found = row.mappings().first()
        return dict(found) if found else None

    async def first_of_hotel(self, hotel_id: str) -> dict | None:
        row = await self.session.execute(
            sa.select(workspace)
            .where(workspace.c.hotel_id == hotel_id, workspace.c.deleted_at.is_(None))
            .order_by(workspace.c.created_at, workspace.c.id)
            .limit(1)
        )
        found = row.mappings().first()
        return dict(found) if found else None

    async def list_in_hotel(self, hotel_id: str, *, only_ids: list[str] | None = None) -> list[dict]:
        if only_ids is None:
            rows = await self.session.execute(_WORKSPACES_OF_HOTEL, {"hotel_id": hotel_id})
        else:
            postgres = self.session.get_bind().dialect.name == "postgresql"
            rows = await self.session.execute(_workspaces_of_hotel_among(postgres), {
                "hotel_id": hotel_id, "ids": list(only_ids) if postgres else json.dumps(list(only_ids))})
        return [dict(r) for r in rows.mappings()]

    async def update(self, workspace_id: str, values: dict[str, Any]) -> None:
        await self.session.execute(sa.update(workspace).where(workspace.c.id == workspace_id).values(**values))


class MemberRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _next_change(self) -> int:
        result = await self.session.execute(
            sa.update(change_counter)
            .where(change_counter.c.name == "member")
            .values(value=change_counter.c.value + 1)
            .returning(change_counter.c.value)
        )
        return int(result.scalar_one())

    async def insert(self, values: dict[str, Any]) -> None:
        await self.session.execute(sa.insert(member).values(**values, change_seq=await self._next_change()))

    async def get_in_workspace(self, workspace_id: str, member_id: str) -> dict | None:
        row = await self.session.execute(_MEMBER_IN_WORKSPACE, {"member_id": member_id, "workspace_id": workspace_id})
        found = row.mappings().first()
        return dict(found) if found else None

    async def get_by_email_in_workspace(self, workspace_id: str, email: str) -> dict | None:
        row = await self.session.execute(
            _member_with_workspace.where(
                member.c.workspace_id == workspace_id, member.c.email == email, member.c.deleted_at.is_(None)
            )
        )
        found = row.mappings().first()
        return dict(found) if found else None

    async def page_in_workspace(self, workspace_id: str, *, after: tuple[datetime, str] | None, limit: int) -> list[dict]:
        values = {"workspace_id": workspace_id, "limit": limit}
        if after is not None:
            values["after_created_at"], values["after_id"] = after
        rows = await self.session.execute(_members_of_workspace(after is not None), values)
        return [dict(r) for r in rows.mappings()]

    async def page_in_hotel(self, hotel_id: str, *, after: tuple[datetime, str] | None, limit: int) -> list[dict]:
        query = _member_with_workspace.where(member.c.hotel_id == hotel_id, member.c.deleted_at.is_(None))
        return await self._page(query, after, limit)

    async def _page(self, query, after: tuple[datetime, str] | None, limit: int) -> list[dict]:
        return await _page_by_creation(self.session, query, member, after, limit)

    async def active_profiles_for_email(self, email: str) -> list[dict]:
        rows = await self.session.execute(
            _member_with_workspace.where(
                member.c.email == email, member.c.deleted_at.is_(None), workspace.c.deleted_at.is_(None)
            ).order_by(member.c.created_at, member.c.id)
        )
        return [dict(r) for r in rows.mappings()]

    async def workspace_ids_of_user(self, user_id: str, hotel_id: str) -> list[str]:
        rows = await self.session.execute(_WORKSPACE_IDS_OF_USER, {"user_id": user_id, "hotel_id": hotel_id})
        return list(rows.scalars())

    async def changed_since(
        self, *, after: tuple[int, str] | None, limit: int, hotel_id: str | None, workspace_id: str | None
    ) -> list[dict]:
        """Members (deleted ones included) in change-feed order, for directories kept elsewhere."""
        query = _member_with_workspace
        if hotel_id:
            query = query.where(member.c.hotel_id == hotel_id)
        if workspace_id:
            query = query.where(member.c.workspace_id == workspace_id)
        if after is not None:
            position, member_id = after
            query = query.where(
                sa.or_(
                    member.c.change_seq > position,
                    sa.and_(member.c.change_seq == position, member.c.id > member_id),
                )
            )
        rows = await self.session.execute(query.order_by(member.c.change_seq, member.c.id).limit(limit))
        return [dict(r) for r in rows.mappings()]

    async def with_ids(self, member_ids: list[str]) -> list[dict]:
        """Members (deleted ones included) with their workspace, for directories resolving unknown ids."""
        rows = await self.session.execute(_member_with_workspace.where(member.c.id.in_(member_ids)))
        return [dict(r) for r in rows.mappings()]

    async def access_changes(self, *, after: int, since: datetime, limit: int) -> tuple[list[dict], int]:
        """Members changed after feed position ``after`` and not before ``since``; and the position reached."""
        latest = (await self.session.execute(sa.select(sa.func.max(member.c.change_seq)))).scalar_one() or 0
        rows = await self.session.execute(
            sa.select(member.c.id, member.c.role, member.c.deleted_at, member.c.updated_at, member.c.change_seq)
            .where(member.c.change_seq > after, member.c.change_seq <= latest, member.c.updated_at > since)
            .order_by(member.c.change_seq)
            .limit(limit)
        )
        found = [dict(r) for r in rows.mappings()]
        return found, found[-1]["change_seq"] if len(found) == limit else max(latest, after)

    async def update(self, member_id: str, values: dict[str, Any]) -> None:
        await self.session.execute(
            sa.update(member)
            .where(member.c.id == member_id)
            .values(version=member.c.version + 1, change_seq=await self._next_change(), **values)
        )

    async def soft_delete_workspace_members(self, workspace_id: str, when: datetime) -> list[str]:
        rows = await self.session.execute(
            sa.update(member)
            .where(member.c.workspace_id == workspace_id, member.c.deleted_at.is_(None))
            .values(deleted_at=when, updated_at=when, version=member.c.version + 1,
                    change_seq=await self._next_change())
            .returning(member.c.id)
        )
        return list(rows.scalars())

    async def known_user_id(self, email: str) -> str | None:
        """The account of an email, as this service knows it: the user of any of its memberships (removed
        ones included), the most recent first. None when that email never signed up."""
        row = await self.session.execute(
            sa.select(member.c.user_id)
            .where(member.c.email == email, member.c.user_id.is_not(None))
            .order_by(member.c.updated_at.desc())
            .limit(1)
        )
        return row.scalar_one_or_none()

    async def count_admins(self, workspace_id: str) -> int:
        result = await self.session.execute(
            sa.select(sa.func.count()).where(
                member.c.workspace_id == workspace_id, member.c.role == "admin", member.c.deleted_at.is_(None)
            )
        )
        return int(result.scalar_one())


class OnboardingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, values: dict[str, Any]) -> None:
        await self.session.execute(sa.insert(onboarding).values(**values))

    async def by_token_hash(self, token_hash: str, *, for_update: bool = False) -> dict | None:
        query = (
            sa.select(onboarding, workspace.c.name.label("workspace_name"), workspace.c.locale.label("workspace_locale"))
            .join(workspace, workspace.c.id == onboarding.c.workspace_id)
            .where(onboarding.c.token_hash == token_hash)
        )
        if for_update:
            query = query.with_for_update(of=onboarding)
        row = await self.session.execute(query)
        found = row.mappings().first()
        return dict(found) if found else None

    async def revoke_pending(self, workspace_id: str, email: str, when: datetime) -> None:
        await self.session.execute(
            sa.update(onboarding)
            .where(
                onboarding.c.workspace_id == workspace_id,
                onboarding.c.email == email,
                onboarding.c.accepted_at.is_(None),
                onboarding.c.revoked_at.is_(None),
            )
            .values(revoked_at=when)
        )

    async def get_in_workspace(self, workspace_id: str, onboarding_id: str, *, for_update: bool = False) -> dict | None:
        query = sa.select(onboarding).where(onboarding.c.id == onboarding_id, onboarding.c.workspace_id == workspace_id)
        if for_update:
            query = query.with_for_update()
        row = await self.session.execute(query)
        found = row.mappings().first()
        return dict(found) if found else None

    async def page_pending(self, workspace_id: str, *, after: tuple[datetime, str] | None, limit: int) -> list[dict]:
        """Invitations neither accepted nor revoked (expired ones included), oldest first."""
        query = sa.select(onboarding).where(
            onboarding.c.workspace_id == workspace_id,
            onboarding.c.accepted_at.is_(None),
            onboarding.c.revoked_at.is_(None),
        )
        return await _page_by_creation(self.session, query, onboarding, after, limit)

    async def revoke(self, onboarding_id: str, when: datetime) -> None:
        await self.session.execute(sa.update(onboarding).where(onboarding.c.id == onboarding_id).values(revoked_at=when))

    async def mark_accepted(self, onboarding_id: str, *, user_id: str, member_id: str, when: datetime) -> None:
        await self.session.execute(
            sa.update(onboarding)
            .where(onboarding.c.id == onboarding_id)
            .values(accepted_at=when, accepted_user_id=user_id, member_id=member_id)
        )
