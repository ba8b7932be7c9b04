"""Business rules of the news service: the page tree (feeds hold articles), comments, likes and
acknowledgements, and the events that notify the workspace (seed Flows 2 and 3)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import nh3
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.auth import PUBLISH_PAGES, Principal
from roomee.kit.clock import as_utc, utcnow
from roomee.kit.errors import Conflict, Forbidden, NotFound, Unprocessable, UpstreamError
from roomee.kit.http import raise_for_status
from roomee.kit.platform import ServiceContext
from roomee.kit.schemas import decode_cursor, decode_time_cursor, encode_cursor, invalid_cursor
from roomee.news import events
from roomee.news.models import acknowledgement, page_like
from roomee.news.repository import (
    AcknowledgementRepository,
    CommentRepository,
    PageRepository,
    ReactionRepository,
    directory,
)

log = logging.getLogger("roomee.news")

FEED, ARTICLE = "feed", "article"


def sanitize(html: str) -> str:
    """Rich text as the platform stores it: ammonia's safe subset (no script, style, event handler
    or ``javascript:`` URL), links opened without referrer."""
    return nh3.clean(html).strip()


def _field_error(field: str, message: str, code: str = "validation_error") -> Unprocessable:
    return Unprocessable([{"loc": ["body", *field.split(".")], "msg": message, "type": code}], code=code)


def _next_time_cursor(rows: list[dict], limit: int) -> str | None:
    if len(rows) < limit:
        return None
    return encode_cursor(as_utc(rows[-1]["created_at"]).isoformat(), rows[-1]["id"])


def _page_event_payload(row: dict, parent: dict | None) -> dict[str, Any]:
    """The seed's ``page.*`` payload, field for field, and the page's type (a feed's events are no article's)."""
    return {
        "id": row["id"],
        "title": row["title"],
        "pageType": row["page_type"],
        "parent": _page_ref(parent) if parent else None,
        "medias": [{"fileUrl": m.get("fileUrl"), "thumbnailUrl": m.get("thumbnailUrl")} for m in row["medias"]],
    }


def _page_ref(row: dict) -> dict[str, Any]:
    """A page as events name it (the seed's ``parent``)."""
    return {"id": row["id"], "title": row["title"], "pageType": row["page_type"]}


def _parent_of_row(row: dict) -> dict | None:
    """The parent read with the page (``PageRepository`` joins its title and type)."""
    if row.get("parent_id") is None or row.get("parent_title") is None:
        return None
    return {"id": row["parent_id"], "title": row["parent_title"], "page_type": row["parent_page_type"]}


def present_page(row: dict, parent: dict | None) -> dict[str, Any]:
    return {
        **row,
        "parent": parent,
        "author": {"id": row["author_id"], "name": row["author_name"]},
        "liked_by_me": bool(row.get("liked_by_me")),
        "acknowledged_by_me": bool(row.get("acknowledged_by_me")),
        "created_at": as_utc(row["created_at"]),
        "updated_at": as_utc(row["updated_at"]),
    }


def present_comment(row: dict) -> dict[str, Any]:
    return {
        **row,
        "author": {"id": row["author_id"], "name": row["author_name"]},
        "created_at": as_utc(row["created_at"]),
        "updated_at": as_utc(row["updated_at"]),
    }


class NewsService:
    def __init__(self, session: AsyncSession, ctx: ServiceContext) -> None:
        self.session = session
        self.ctx = ctx
        self.pages = PageRepository(session)
        self.comments = CommentRepository(session)
        self.reactions = ReactionRepository(session)
        self.acknowledgements = AcknowledgementRepository(session)
        self.directory = directory(session)

    async def _workspace_name(self, workspace_id: str) -> str | None:
        found = await self.directory.workspace(workspace_id)
        return found["name"] if found else None

    def _may_change(self, principal: Principal, row: dict) -> bool:
        return principal.has(PUBLISH_PAGES) or row["author_id"] == principal.member_id

    # --- pages ----------------------------------------------------------------------------------

    async def _live_page(self, principal: Principal, page_id: str) -> dict:
        found = await self.pages.get(principal.workspace_id, page_id)
        if found is None:
            raise NotFound("page not found", code="page_not_found")
        return found

    async def _parent_of(self, principal: Principal, row: dict) -> dict | None:
        if row["parent_id"] is None:
            return None
        return (await self.pages.titles(principal.workspace_id, [row["parent_id"]])).get(row["parent_id"])

    async def _resolve_medias(self, principal: Principal, media_ids: list[str]) -> list[dict[str, Any]]:
        """``[{id, fileUrl, thumbnailUrl}]`` of completed media of the caller's hotel, in the given
        order (duplicates dropped); a media of another hotel is reported as absent."""
        unique = list(dict.fromkeys(media_ids))
        if not unique:
            return []
        client = self.ctx.client("media")
        responses = await asyncio.gather(*(client.get("/media/{id}", path_params={"id": media_id}) for media_id in unique))
        resolved = []
        for media_id, response in zip(unique, responses):
            field = f"medias.{media_ids.index(media_id)}"
            if response.status_code == 404:
                raise NotFound([{"loc": ["body", *field.split(".")], "msg": f"no media {media_id}"}],
                               code="media_not_found")
            if response.status_code in (401, 403):
                # Our own service token was refused: a platform misconfiguration, not the caller's fault.
                raise UpstreamError({"status": response.status_code, "upstream": "media"})
            raise_for_status(response)
            media = response.json()
            if media.get("ecosystemId") != principal.hotel_id:
                raise NotFound([{"loc": ["body", *field.split(".")], "msg": f"no media {media_id}"}],
                               code="media_not_found")
            if media.get("status") != "completed":
                raise _field_error(field, f"media {media_id} is not uploaded yet", code="media_not_ready")
            resolved.append({"id": media["id"], "fileUrl": media.get("fileUrl"), "thumbnailUrl": media.get("thumbnailUrl")})
        return resolved

    async def create_page(self, principal: Principal, data: dict[str, Any], idempotency_key: str | None) -> dict:
        if idempotency_key:
            existing = await self.pages.by_idempotency_key(principal.workspace_id, principal.member_id, idempotency_key)
            if existing is not None:
                return await self.get_page(principal, existing["id"])
        parent = None
        if data["parent_id"] is not None:
            parent = await self.pages.get(principal.workspace_id, data["parent_id"])
            if parent is None:
                raise NotFound([{"loc": ["body", "parentId"], "msg": "no such page"}], code="parent_not_found")
            if parent["page_type"] != FEED:
                raise _field_error("parentId", "pages are children of a feed", code="invalid_parent")
        elif data["page_type"] == ARTICLE:
            raise _field_error("parentId", "an article belongs to a feed", code="invalid_parent")
        medias = await self._resolve_medias(principal, data["medias"])
        now = utcnow()
        row = {
            "id": str(uuid.uuid4()),
            "workspace_id": principal.workspace_id,
            "hotel_id": principal.hotel_id,
            "parent_id": data["parent_id"],
            "page_type": data["page_type"],
            "title": data["title"].strip(),
            "content": sanitize(data["content"]),
            "medias": medias,
            "enable_notifications": data["enable_notifications"],
            "requires_acknowledgement": data["requires_acknowledgement"],
            "author_id": principal.member_id,
            "author_name": principal.name or "",
            "comment_count": 0,
            "like_count": 0,
            "idempotency_key": idempotency_key,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self.session.begin_nested():
                await self.pages.insert(row)
        except IntegrityError:
            # The same Idempotency-Key raced this request and won.
            existing = await self.pages.by_idempotency_key(principal.workspace_id, principal.member_id, idempotency_key)
            if existing is None:
                raise
            return await self.get_page(principal, existing["id"])
        parent_ref = {"id": parent["id"], "title": parent["title"], "page_type": parent["page_type"]} if parent else None
        if row["page_type"] == ARTICLE:
            # Flow 2: every active member of the workspace but the author, from the local directory.
            receivers = await self.directory.active_member_ids(principal.workspace_id, except_ids=[principal.member_id])
            channels = events.PUSH_AND_SOCKET
        else:
            receivers, channels = [], events.SOCKET_ONLY
        await events.publish(
            self.session, events.PAGE_CREATED, principal, workspace_name=await self._workspace_name(principal.workspace_id),
            payload=_page_event_payload(row, parent_ref), channels=channels, receiver_ids=receivers,
        )
        log.info("page created", extra={"page_id": row["id"], "page_type": row["page_type"], "receivers": len(receivers)})
        return present_page(row, parent_ref)

    async def list_pages(
        self, principal: Principal, *, parent_id: str | None, page_type: str | None, cursor: str | None, limit: int
    ) -> dict:
        rows = await self.pages.children(
            principal.workspace_id, parent_id, principal.member_id, page_type=page_type,
            before=decode_time_cursor(cursor), limit=limit,
        )
        if not rows and parent_id is not None and await self.pages.get(principal.workspace_id, parent_id) is None:
            # Children are read with their parent; only an empty list needs to ask whether it exists.
            raise NotFound("page not found", code="page_not_found")
        return {"items": [present_page(r, _parent_of_row(r)) for r in rows], "next_cursor": _next_time_cursor(rows, limit)}

    async def get_page(self, principal: Principal, page_id: str) -> dict:
        found = await self.pages.get_for(principal.workspace_id, page_id, principal.member_id)
        if found is None:
            raise NotFound("page not found", code="page_not_found")
        return present_page(found, _parent_of_row(found))

    async def update_page(self, principal: Principal, page_id: str, changes: dict[str, Any]) -> dict:
        found = await self._live_page(principal, page_id)
        if not self._may_change(principal, found):
            raise Forbidden(f"permission '{PUBLISH_PAGES}' required (or be the author)", code="permission_denied")
        # Only content and medias may be null (the schema refuses it elsewhere): null empties them.
        changes = {k: ("" if k == "content" else []) if v is None else v for k, v in changes.items()}
        if "title" in changes:
            changes["title"] = changes["title"].strip()
        if "content" in changes:
            changes["content"] = sanitize(changes["content"])
        if "medias" in changes:
            changes["medias"] = await self._resolve_medias(principal, changes["medias"])
        if changes:
            changes["updated_at"] = utcnow()
            if not await self.pages.update(principal.workspace_id, page_id, changes):
                raise NotFound("page not found", code="page_not_found")
            updated = {**found, **changes}
            await events.publish(
                self.session, events.PAGE_UPDATED, principal,
                workspace_name=await self._workspace_name(principal.workspace_id),
                payload=_page_event_payload(updated, await self._parent_of(principal, updated)),
                channels=events.SOCKET_ONLY,
            )
        return await self.get_page(principal, page_id)

    async def delete_page(self, principal: Principal, page_id: str) -> None:
        found = await self._live_page(principal, page_id)
        if not self._may_change(principal, found):
            raise Forbidden(f"permission '{PUBLISH_PAGES}' required (or be the author)", code="permission_denied")
        deleted = await self.pages.soft_delete_tree(principal.workspace_id, page_id, utcnow())
        log.info("page deleted", extra={"page_id": page_id, "pages": len(deleted)})
        await events.publish(
            self.session, events.PAGE_DELETED, principal, workspace_name=await self._workspace_name(principal.workspace_id),
            payload=_page_event_payload(found, await self._parent_of(principal, found)), channels=events.SOCKET_ONLY,
        )

    # --- comments -------------------------------------------------------------------------------

    async def create_comment(self, principal: Principal, data: dict[str, Any], idempotency_key: str | None) -> dict:
        if idempotency_key:
            existing = await self.comments.by_idempotency_key(principal.workspace_id, principal.member_id, idempotency_key)
            if existing is not None:
                found = await self.pages.get(principal.workspace_id, existing["page_id"])
                return {**present_comment(existing), "comment_count": found["comment_count"] if found else 0}
        found = await self.pages.get(principal.workspace_id, data["page_id"])
        if found is None:
            raise NotFound([{"loc": ["body", "pageId"], "msg": "no such page"}], code="page_not_found")
        if data["parent_id"] is not None:
            replied = await self.comments.get(principal.workspace_id, data["parent_id"])
            if replied is None or replied["page_id"] != found["id"]:
                raise NotFound([{"loc": ["body", "parentId"], "msg": "no such comment on this page"}],
                               code="comment_not_found")
        content = sanitize(data["content"])
        if not content:
            raise _field_error("content", "the comment is empty once sanitised")
        now = utcnow()
        row = {
            "id": str(uuid.uuid4()),
            "page_id": found["id"],
            "workspace_id": principal.workspace_id,
            "parent_id": data["parent_id"],
            "author_id": principal.member_id,
            "author_name": principal.name or "",
            "content": content,
            "idempotency_key": idempotency_key,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self.session.begin_nested():
                await self.comments.insert(row)
        except IntegrityError:
            existing = await self.comments.by_idempotency_key(principal.workspace_id, principal.member_id, idempotency_key)
            if existing is None:
                raise
            return {**present_comment(existing), "comment_count": found["comment_count"]}
        # In the comment's transaction, in one statement: concurrent comments never lose a count.
        count = await self.pages.add_to_counter(principal.workspace_id, found["id"], "comment_count", 1)
        if count is None:
            raise NotFound([{"loc": ["body", "pageId"], "msg": "no such page"}], code="page_not_found")
        await self._comment_events(principal, events.COMMENT_CREATED, row, found, count, notify_author=True)
        return {**present_comment(row), "comment_count": count}

    async def _comment_events(
        self, principal: Principal, event_type: str, row: dict, page_row: dict, count: int, *, notify_author: bool
    ) -> None:
        """Flow 3's graded events: a socket-only UI update to the workspace (the commenter excluded),
        then push + socket to the page's author when the page asks for it."""
        payload = {
            "id": row["id"],
            "page": _page_ref(page_row),
            "parentId": row["parent_id"],
            "content": row["content"],
            "commentCount": count,
        }
        workspace_name = await self._workspace_name(principal.workspace_id)
        await events.publish(self.session, event_type, principal, workspace_name=workspace_name, payload=payload,
                             channels=events.SOCKET_ONLY)
        if notify_author and page_row["enable_notifications"] and page_row["author_id"] != principal.member_id:
            await events.publish(self.session, event_type, principal, workspace_name=workspace_name, payload=payload,
                                 channels=events.PUSH_AND_SOCKET, receiver_ids=[page_row["author_id"]])

    async def list_comments(self, principal: Principal, page_id: str, *, cursor: str | None, limit: int) -> dict:
        rows = await self.comments.of_live_page(principal.workspace_id, page_id, after=decode_time_cursor(cursor),
                                                limit=limit)
        if rows is None:
            raise NotFound("page not found", code="page_not_found")
        return {"items": [present_comment(r) for r in rows], "next_cursor": _next_time_cursor(rows, limit)}

    async def _own_comment(self, principal: Principal, comment_id: str, *, moderate: bool) -> tuple[dict, dict]:
        found = await self.comments.get(principal.workspace_id, comment_id)
        page_row = await self.pages.get(principal.workspace_id, found["page_id"]) if found else None
        if found is None or page_row is None:
            raise NotFound("comment not found", code="comment_not_found")
        if found["author_id"] != principal.member_id and not (moderate and principal.has(PUBLISH_PAGES)):
            raise Forbidden("only the author may change this comment", code="permission_denied")
        return found, page_row

    async def update_comment(self, principal: Principal, comment_id: str, content: str) -> dict:
        found, page_row = await self._own_comment(principal, comment_id, moderate=False)
        content = sanitize(content)
        if not content:
            raise _field_error("content", "the comment is empty once sanitised")
        changes = {"content": content, "updated_at": utcnow()}
        await self.comments.update(principal.workspace_id, comment_id, changes)
        updated = {**found, **changes}
        await self._comment_events(principal, events.COMMENT_UPDATED, updated, page_row, page_row["comment_count"],
                                   notify_author=False)
        return present_comment(updated)

    async def delete_comment(self, principal: Principal, comment_id: str) -> None:
        """The author, or a publisher moderating; the page's count follows in the same transaction."""
        found, page_row = await self._own_comment(principal, comment_id, moderate=True)
        now = utcnow()
        if not await self.comments.update(principal.workspace_id, comment_id, {"deleted_at": now, "updated_at": now}):
            raise NotFound("comment not found", code="comment_not_found")
        count = await self.pages.add_to_counter(principal.workspace_id, page_row["id"], "comment_count", -1)
        await self._comment_events(principal, events.COMMENT_DELETED, found, page_row, count or 0, notify_author=False)

    # --- likes ----------------------------------------------------------------------------------

    async def like(self, principal: Principal, page_id: str) -> dict:
        """Idempotent: liking again changes nothing and emits nothing."""
        found = await self._live_page(principal, page_id)
        added = await self.reactions.add(page_like, {"page_id": page_id, "member_id": principal.member_id,
                                                     "workspace_id": principal.workspace_id, "created_at": utcnow()})
        if not added:
            # Liked already, maybe by a concurrent request committed since the page was read: count anew.
            return {"page_id": page_id, "liked": True, "like_count": await self._likes(principal, page_id)}
        count = await self.pages.add_to_counter(principal.workspace_id, page_id, "like_count", 1)
        if found["author_id"] != principal.member_id:
            await self._like_event(principal, events.LIKE_CREATED, found, count, receivers=[found["author_id"]])
        return {"page_id": page_id, "liked": True, "like_count": count}

    async def unlike(self, principal: Principal, page_id: str) -> dict:
        found = await self._live_page(principal, page_id)
        if not await self.reactions.remove(page_like, page_id, principal.member_id):
            return {"page_id": page_id, "liked": False, "like_count": await self._likes(principal, page_id)}
        count = await self.pages.add_to_counter(principal.workspace_id, page_id, "like_count", -1)
        await self._like_event(principal, events.LIKE_DELETED, found, count, receivers=[])
        return {"page_id": page_id, "liked": False, "like_count": count}

    async def _likes(self, principal: Principal, page_id: str) -> int:
        current = await self.pages.get(principal.workspace_id, page_id)
        if current is None:
            raise NotFound("page not found", code="page_not_found")
        return current["like_count"]

    async def _like_event(self, principal: Principal, event_type: str, page_row: dict, count: int | None,
                          *, receivers: list[str]) -> None:
        """``like.created`` with push + socket to the page's author; ``like.deleted`` as a socket UI update."""
        await events.publish(
            self.session, event_type, principal, workspace_name=await self._workspace_name(principal.workspace_id),
            payload={"page": _page_ref(page_row), "likeCount": count},
            channels=events.PUSH_AND_SOCKET if receivers else events.SOCKET_ONLY, receiver_ids=receivers,
        )

    # --- acknowledgements -----------------------------------------------------------------------

    async def acknowledge(self, principal: Principal, page_id: str) -> dict:
        """Idempotent: the first acknowledgement's time is kept."""
        found = await self._live_page(principal, page_id)
        if not found["requires_acknowledgement"]:
            raise Conflict("this page does not ask for acknowledgement", code="acknowledgement_not_required")
        await self.reactions.add(acknowledgement, {
            "page_id": page_id, "member_id": principal.member_id, "workspace_id": principal.workspace_id,
            "member_name": principal.name or "", "acknowledged_at": utcnow(),
        })
        row = await self.reactions.acknowledgement(page_id, principal.member_id)
        return {**row, "acknowledged_at": as_utc(row["acknowledged_at"])}

    async def _ack_page(self, principal: Principal, page_id: str) -> dict:
        found = await self._live_page(principal, page_id)
        if not self._may_change(principal, found):
            raise Forbidden(f"permission '{PUBLISH_PAGES}' required (or be the author)", code="permission_denied")
        if not found["requires_acknowledgement"]:
            raise Conflict("this page does not ask for acknowledgement", code="acknowledgement_not_required")
        return found

    async def acknowledgement_statuses(
        self, principal: Principal, page_id: str, *, acknowledged: bool, cursor: str | None, limit: int
    ) -> dict:
        """Who has (or has not yet) acknowledged, among the workspace's members but the author."""
        found = await self._ack_page(principal, page_id)
        values = decode_cursor(cursor)
        if values is not None and (len(values) != 1 or not isinstance(values[0], str)):
            raise invalid_cursor()
        rows = await self.acknowledgements.statuses(
            principal.workspace_id, page_id, found["author_id"], acknowledged=acknowledged,
            after=values[0] if values else None, limit=limit,
        )
        items = [
            {"member_id": r["member_id"], "name": r["name"], "acknowledged": r["acknowledged_at"] is not None,
             "acknowledged_at": as_utc(r["acknowledged_at"])}
            for r in rows
        ]
        next_cursor = encode_cursor(rows[-1]["member_id"]) if len(rows) == limit else None
        return {"items": items, "next_cursor": next_cursor}

    async def acknowledgement_summary(self, principal: Principal, page_id: str) -> dict:
        found = await self._ack_page(principal, page_id)
        done, pending = await self.acknowledgements.counts(principal.workspace_id, page_id, found["author_id"])
        return {"page_id": page_id, "acknowledged": done, "pending": pending}
