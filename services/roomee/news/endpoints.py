"""HTTP routes of the news service (api-news), under ``/api/v1``. Seed paths are kept exactly
(``POST /api/v1/pages``, ``POST /api/v1/comments``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.auth import PUBLISH_PAGES, CurrentMember, Principal, require_permission
from roomee.kit.deps import context_of, session_for
from roomee.kit.hot import hot_read
from roomee.kit.platform import ServiceContext
from roomee.kit.schemas import Page
from roomee.news import schemas
from roomee.news.service import NewsService

router = APIRouter(prefix="/api/v1", tags=["news"])

Session = Annotated[AsyncSession, Depends(session_for("news"), scope="function")]
Context = Annotated[ServiceContext, Depends(context_of("news"))]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=500, description="The `nextCursor` of the previous page.")]
PageId = Annotated[str, Path(min_length=1, max_length=36)]
CommentId = Annotated[str, Path(min_length=1, max_length=36)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200, description="Retry-safe creation: the same key returns the first result."),
]

_DESCRIPTIONS = {
    401: "No or invalid bearer token.",
    403: "Not allowed: missing permission, not the author, or not a member token.",
    404: "No such page, comment or media in the caller's workspace.",
    409: "The page does not ask for acknowledgement.",
    422: "Invalid input (the field is named in `detail`), an invalid cursor, or a media not uploaded yet.",
    502: "The media service answered unexpectedly.",
    503: "The media service is unavailable (circuit open or timeout); retry.",
}


def _errors(*codes: int) -> dict:
    return {code: {"description": _DESCRIPTIONS[code]} for code in codes}


async def _service(session: Session, ctx: Context) -> NewsService:
    return NewsService(session, ctx)


News = Annotated[NewsService, Depends(_service)]


# A removed member's or a demoted member's token is refused by the kit's verifier (access changes).
Member = CurrentMember
Publisher = Annotated[Principal, Depends(require_permission(PUBLISH_PAGES))]


@router.post("/pages", status_code=201, response_model=schemas.PageOut, responses=_errors(401, 403, 404, 422, 502, 503))
async def create_page(body: schemas.PageCreate, service: News, principal: Publisher, idempotency_key: IdempotencyKey = None):
    """Create a feed or an article (requires `publish_pages`).

    An article belongs to a feed (`parentId`). `content` is sanitised HTML; `medias` are media ids of
    the caller's hotel, checked with the media service (completed uploads only) and stored as
    `{fileUrl, thumbnailUrl}`. Publishing an article emits `roomee.notification.page.created` to every
    active member of the workspace but the author (push + socket); a feed is announced on the socket only.
    """
    return await service.create_page(principal, body.model_dump(), idempotency_key)


@router.get("/pages", response_model=Page[schemas.PageOut], responses=_errors(401, 403, 404, 422))
@hot_read
async def list_pages(
    service: News,
    principal: Member,
    parent_id: Annotated[str | None, Query(alias="parentId", max_length=36, description="List this page's children; omitted: top-level pages.")] = None,
    page_type: Annotated[Literal["feed", "article"] | None, Query(alias="pageType")] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
):
    """Live pages under a parent (a feed's articles), newest first, paginated by cursor."""
    return await service.list_pages(principal, parent_id=parent_id, page_type=page_type, cursor=cursor, limit=limit)


@router.get("/pages/{page_id}", response_model=schemas.PageOut, responses=_errors(401, 403, 404))
@hot_read
async def get_page(page_id: PageId, service: News, principal: Member):
    """One page of the caller's workspace."""
    return await service.get_page(principal, page_id)


@router.patch("/pages/{page_id}", response_model=schemas.PageOut, responses=_errors(401, 403, 404, 422, 502, 503))
async def update_page(page_id: PageId, body: schemas.PageUpdate, service: News, principal: Member):
    """Edit a page (requires `publish_pages`, or be its author); emits `page.updated` (socket)."""
    return await service.update_page(principal, page_id, body.model_dump(exclude_unset=True))


@router.delete("/pages/{page_id}", status_code=204, responses=_errors(401, 403, 404))
async def delete_page(page_id: PageId, service: News, principal: Member) -> Response:
    """Soft-delete a page and the pages under it (a feed takes its articles); requires `publish_pages`,
    or be its author; emits `page.deleted` (socket)."""
    await service.delete_page(principal, page_id)
    return Response(status_code=204)


@router.get("/pages/{page_id}/comments", response_model=Page[schemas.CommentOut], responses=_errors(401, 403, 404, 422))
@hot_read
async def list_comments(page_id: PageId, service: News, principal: Member, limit: Limit = 50, cursor: Cursor = None):
    """Live comments of a page, oldest first, paginated by cursor."""
    return await service.list_comments(principal, page_id, cursor=cursor, limit=limit)


@router.post("/comments", status_code=201, response_model=schemas.CommentCreated, responses=_errors(401, 403, 404, 422))
async def create_comment(body: schemas.CommentCreate, service: News, principal: Member, idempotency_key: IdempotencyKey = None):
    """Comment on a page (or reply to a comment with `parentId`).

    The comment and the page's `commentCount` change in one transaction. Two events follow (Flow 3):
    `comment.created` on the socket to the workspace (the commenter excluded), and, when the page has
    `enableNotifications` and the commenter is not its author, `comment.created` with push + socket
    to the page's author.
    """
    return await service.create_comment(principal, body.model_dump(), idempotency_key)


@router.patch("/comments/{comment_id}", response_model=schemas.CommentOut, responses=_errors(401, 403, 404, 422))
async def update_comment(comment_id: CommentId, body: schemas.CommentUpdate, service: News, principal: Member):
    """Edit one's own comment; emits `comment.updated` (socket)."""
    return await service.update_comment(principal, comment_id, body.content)


@router.delete("/comments/{comment_id}", status_code=204, responses=_errors(401, 403, 404))
async def delete_comment(comment_id: CommentId, service: News, principal: Member) -> Response:
    """Delete one's own comment (or any, with `publish_pages`); the page's `commentCount` follows."""
    await service.delete_comment(principal, comment_id)
    return Response(status_code=204)


@router.put("/pages/{page_id}/like", response_model=schemas.LikeOut, responses=_errors(401, 403, 404))
async def like_page(page_id: PageId, service: News, principal: Member):
    """Like a page (idempotent); the first like emits `like.created` to the page's author."""
    return await service.like(principal, page_id)


@router.delete("/pages/{page_id}/like", response_model=schemas.LikeOut, responses=_errors(401, 403, 404))
async def unlike_page(page_id: PageId, service: News, principal: Member):
    """Remove one's like (idempotent); emits `like.deleted` (socket) when there was one."""
    return await service.unlike(principal, page_id)


@router.put("/pages/{page_id}/acknowledgement", response_model=schemas.AcknowledgementOut,
            responses=_errors(401, 403, 404, 409))
async def acknowledge_page(page_id: PageId, service: News, principal: Member):
    """Acknowledge a page that asks for it (idempotent: the first time is kept)."""
    return await service.acknowledge(principal, page_id)


@router.get("/pages/{page_id}/acknowledgements", response_model=Page[schemas.AcknowledgementStatus],
            responses=_errors(401, 403, 404, 409, 422))
async def acknowledgements(
    page_id: PageId,
    service: News,
    principal: Member,
    status: Annotated[Literal["acknowledged", "pending"], Query(description="Who has, or has not yet, acknowledged.")] = "pending",
    limit: Limit = 50,
    cursor: Cursor = None,
):
    """Members of the workspace (the author excluded) who have or have not acknowledged the page,
    by member id (requires `publish_pages`, or be the author)."""
    return await service.acknowledgement_statuses(
        principal, page_id, acknowledged=status == "acknowledged", cursor=cursor, limit=limit
    )


@router.get("/pages/{page_id}/acknowledgements/summary", response_model=schemas.AcknowledgementSummary,
            responses=_errors(401, 403, 404, 409))
async def acknowledgement_summary(page_id: PageId, service: News, principal: Member):
    """How many members have and have not acknowledged the page (requires `publish_pages`, or be the author)."""
    return await service.acknowledgement_summary(principal, page_id)
