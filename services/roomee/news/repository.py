"""All SQL of the news service. Every query filters on the caller's workspace and skips soft-deleted
rows (the seed's rule 1: ``workspaceId`` and ``deleted_at: null`` on every read)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.directory import DirectoryStore
from roomee.kit.repository import Repository
from roomee.news.models import DIRECTORY_TABLES, acknowledgement, comment, page, page_like

Cursor = tuple[datetime, str]


def _live_page(workspace_id: str, page_id: str):
    return sa.and_(page.c.workspace_id == workspace_id, page.c.id == page_id, page.c.deleted_at.is_(None))


def _mine(table: sa.Table, member_id: str):
    """Whether the member has a row in ``table`` (likes, acknowledgements) for the page."""
    return (
        sa.exists().where(table.c.page_id == page.c.id, table.c.member_id == member_id).correlate(page)
    )


_parent = page.alias("parent")


def _reader(member_id) -> sa.Select:
    """Pages as a reader sees them, in one query: with their parent's title and type, and the
    member's like and acknowledgement."""
    return sa.select(
        page,
        _parent.c.title.label("parent_title"),
        _parent.c.page_type.label("parent_page_type"),
        _mine(page_like, member_id).label("liked_by_me"),
        _mine(acknowledgement, member_id).label("acknowledged_by_me"),
    ).select_from(
        page.outerjoin(_parent, sa.and_(_parent.c.id == page.c.parent_id, _parent.c.deleted_at.is_(None)))
    )


# Statements built once with bound parameters (a hot read compiles each once: roomee.kit.hot).
_PAGE = sa.select(page).where(_live_page(sa.bindparam("workspace_id"), sa.bindparam("page_id")))
_PAGE_FOR_READER = _reader(sa.bindparam("member_id")).where(_live_page(sa.bindparam("workspace_id"),
                                                                      sa.bindparam("page_id")))


@functools.cache
def _comments_statement(after_cursor: bool) -> sa.Select:
    """A live page of the workspace LEFT JOINed to its live comments, oldest first, built once per shape:
    no row when the page is missing (or another workspace's), one row without a comment when it has none
    (past the cursor), in one statement."""
    on = [comment.c.workspace_id == page.c.workspace_id, comment.c.page_id == page.c.id,
          comment.c.deleted_at.is_(None)]
    if after_cursor:
        created_at = sa.bindparam("after_created_at", type_=comment.c.created_at.type)
        on.append(sa.or_(
            comment.c.created_at > created_at,
            sa.and_(comment.c.created_at == created_at, comment.c.id > sa.bindparam("after_id")),
        ))
    return (
        sa.select(page.c.id.label("live_page_id"), comment)
        .select_from(page.outerjoin(comment, sa.and_(*on)))
        .where(_live_page(sa.bindparam("workspace_id"), sa.bindparam("page_id")))
        .order_by(comment.c.created_at, comment.c.id)
        .limit(sa.bindparam("limit"))
    )


@functools.cache
def _feed_statement(under_parent: bool, of_type: bool, after_cursor: bool) -> sa.Select:
    """The feed read, built once per shape with bound parameters: the request path only binds values."""
    query = _reader(sa.bindparam("member_id")).where(
        page.c.workspace_id == sa.bindparam("workspace_id"), page.c.deleted_at.is_(None))
    if under_parent:
        # Only while the parent itself is live (the join found it).
        query = query.where(page.c.parent_id == sa.bindparam("parent_id"), _parent.c.id.is_not(None))
    else:
        query = query.where(page.c.parent_id.is_(None))
    if of_type:
        query = query.where(page.c.page_type == sa.bindparam("page_type"))
    if after_cursor:
        created_at = sa.bindparam("before_created_at", type_=page.c.created_at.type)
        query = query.where(sa.or_(
            page.c.created_at < created_at,
            sa.and_(page.c.created_at == created_at, page.c.id < sa.bindparam("before_id")),
        ))
    return query.order_by(page.c.created_at.desc(), page.c.id.desc()).limit(sa.bindparam("limit"))


class PageRepository(Repository):

    async def insert(self, values: dict[str, Any]) -> None:
        await self.session.execute(sa.insert(page).values(**values))

    async def get(self, workspace_id: str, page_id: str) -> dict | None:
        return await self._one(_PAGE, {"workspace_id": workspace_id, "page_id": page_id})

    async def get_for(self, workspace_id: str, page_id: str, member_id: str) -> dict | None:
        """A live page with its parent's title and type, and the member's like and acknowledgement."""
        return await self._one(_PAGE_FOR_READER, {"workspace_id": workspace_id, "page_id": page_id,
                                                  "member_id": member_id})

    async def by_idempotency_key(self, workspace_id: str, author_id: str, key: str) -> dict | None:
        return await self._one(
            sa.select(page).where(
                page.c.workspace_id == workspace_id, page.c.author_id == author_id, page.c.idempotency_key == key
            )
        )

    async def children(
        self, workspace_id: str, parent_id: str | None, member_id: str, *, page_type: str | None,
        before: Cursor | None, limit: int,
    ) -> list[dict]:
        """Live children of a parent (``None``: the workspace's top-level pages), newest first."""
        statement = _feed_statement(parent_id is not None, page_type is not None, before is not None)
        values = {"workspace_id": workspace_id, "member_id": member_id, "limit": limit, "parent_id": parent_id,
                  "page_type": page_type}
        if before is not None:
            values["before_created_at"], values["before_id"] = before
        rows = await self.session.execute(statement, values)
        return [dict(r) for r in rows.mappings()]

    async def titles(self, workspace_id: str, page_ids: Sequence[str]) -> dict[str, dict]:
        """``{id: {id, title, page_type}}`` of live pages (parents of what is shown)."""
        if not page_ids:
            return {}
        rows = await self.session.execute(
            sa.select(page.c.id, page.c.title, page.c.page_type).where(
                page.c.workspace_id == workspace_id, page.c.id.in_(list(page_ids)), page.c.deleted_at.is_(None)
            )
        )
        return {r["id"]: dict(r) for r in rows.mappings()}

    async def update(self, workspace_id: str, page_id: str, values: dict[str, Any]) -> bool:
        result = await self.session.execute(sa.update(page).where(_live_page(workspace_id, page_id)).values(**values))
        return result.rowcount > 0

    async def soft_delete_tree(self, workspace_id: str, page_id: str, when: datetime) -> list[str]:
        """Soft-delete a page and every live page under it (a feed takes its articles); their ids."""
        deleted, level = [], [page_id]
        while level:
            rows = await self.session.execute(
                sa.update(page)
                .where(page.c.workspace_id == workspace_id, page.c.id.in_(level), page.c.deleted_at.is_(None))
                .values(deleted_at=when, updated_at=when)
                .returning(page.c.id)
            )
            level = list(rows.scalars())
            deleted += level
            if level:
                children = await self.session.execute(
                    sa.select(page.c.id).where(page.c.workspace_id == workspace_id, page.c.parent_id.in_(level),
                                               page.c.deleted_at.is_(None))
                )
                level = list(children.scalars())
        return deleted

    async def add_to_counter(self, workspace_id: str, page_id: str, column: str, delta: int) -> int | None:
        """Add ``delta`` to a counter in the database (one statement: no lost update under concurrency);
        the new value, or ``None`` when the page is gone."""
        counter = page.c[column]
        result = await self.session.execute(
            sa.update(page)
            .where(_live_page(workspace_id, page_id))
            .values({column: sa.case((counter + delta < 0, 0), else_=counter + delta)})
            .returning(counter)
        )
        value = result.scalar_one_or_none()
        return int(value) if value is not None else None


class CommentRepository(Repository):
    async def insert(self, values: dict[str, Any]) -> None:
        await self.session.execute(sa.insert(comment).values(**values))

    async def get(self, workspace_id: str, comment_id: str) -> dict | None:
        return await self._one(
            sa.select(comment).where(
                comment.c.workspace_id == workspace_id, comment.c.id == comment_id, comment.c.deleted_at.is_(None)
            )
        )

    async def by_idempotency_key(self, workspace_id: str, author_id: str, key: str) -> dict | None:
        return await self._one(
            sa.select(comment).where(
                comment.c.workspace_id == workspace_id, comment.c.author_id == author_id,
                comment.c.idempotency_key == key,
            )
        )

    async def of_live_page(self, workspace_id: str, page_id: str, *, after: Cursor | None,
                           limit: int) -> list[dict] | None:
        """Live comments of a live page of the workspace, oldest first (a conversation reads downwards);
        None when there is no such page. One statement (the page's existence comes with its comments)."""
        values = {"workspace_id": workspace_id, "page_id": page_id, "limit": limit}
        if after is not None:
            values["after_created_at"], values["after_id"] = after
        rows = [dict(r) for r in (await self.session.execute(_comments_statement(after is not None), values)).mappings()]
        if not rows:
            return None
        for row in rows:
            del row["live_page_id"]
        return [row for row in rows if row["id"] is not None]

    async def update(self, workspace_id: str, comment_id: str, values: dict[str, Any]) -> bool:
        result = await self.session.execute(
            sa.update(comment)
            .where(comment.c.workspace_id == workspace_id, comment.c.id == comment_id, comment.c.deleted_at.is_(None))
            .values(**values)
        )
        return result.rowcount > 0


class ReactionRepository(Repository):
    """Likes and acknowledgements: one row per (page, member)."""

    async def add(self, table: sa.Table, values: dict[str, Any]) -> bool:
        """Insert unless present; whether a row was added."""
        result = await self.session.execute(self._insert(table).values(**values).on_conflict_do_nothing())
        return result.rowcount > 0

    async def remove(self, table: sa.Table, page_id: str, member_id: str) -> bool:
        result = await self.session.execute(
            sa.delete(table).where(table.c.page_id == page_id, table.c.member_id == member_id)
        )
        return result.rowcount > 0

    async def acknowledgement(self, page_id: str, member_id: str) -> dict | None:
        return await self._one(
            sa.select(acknowledgement).where(
                acknowledgement.c.page_id == page_id, acknowledgement.c.member_id == member_id
            )
        )


class AcknowledgementRepository(Repository):
    """Who has and has not acknowledged a page: its acknowledgements against the directory's live
    members of the workspace (the author excluded)."""

    def _members(self, workspace_id: str, author_id: str):
        d = DIRECTORY_TABLES.member.c
        return d, (d.workspace_id == workspace_id) & d.deleted_at.is_(None) & (d.member_id != author_id)

    async def statuses(
        self, workspace_id: str, page_id: str, author_id: str, *, acknowledged: bool, after: str | None, limit: int,
    ) -> list[dict]:
        """Members in id order with ``acknowledged_at`` (``None`` when pending)."""
        d, live = self._members(workspace_id, author_id)
        a = acknowledgement.c
        joined = DIRECTORY_TABLES.member.outerjoin(acknowledgement, sa.and_(a.member_id == d.member_id, a.page_id == page_id))
        query = (
            sa.select(d.member_id, d.name, a.acknowledged_at)
            .select_from(joined)
            .where(live, a.member_id.is_not(None) if acknowledged else a.member_id.is_(None))
        )
        if after is not None:
            query = query.where(d.member_id > after)
        rows = await self.session.execute(query.order_by(d.member_id).limit(limit))
        return [dict(r) for r in rows.mappings()]

    async def counts(self, workspace_id: str, page_id: str, author_id: str) -> tuple[int, int]:
        """(acknowledged, pending) among the workspace's live members."""
        d, live = self._members(workspace_id, author_id)
        a = acknowledgement.c
        joined = DIRECTORY_TABLES.member.outerjoin(acknowledgement, sa.and_(a.member_id == d.member_id, a.page_id == page_id))
        row = (
            await self.session.execute(
                sa.select(sa.func.count(a.member_id), sa.func.count()).select_from(joined).where(live)
            )
        ).one()
        done, total = int(row[0]), int(row[1])
        return done, total - done


def directory(session: AsyncSession) -> DirectoryStore:
    return DirectoryStore(session, DIRECTORY_TABLES)
