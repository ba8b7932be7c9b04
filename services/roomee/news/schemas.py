"""Request and response bodies of the news service (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from roomee.kit.schemas import CamelModel

PageType = Literal["feed", "article"]
MediaId = Annotated[str, Field(min_length=1, max_length=36)]
MAX_CONTENT = 100_000
MAX_MEDIAS = 20


class PageCreate(CamelModel):
    page_type: PageType = Field(description="`feed` holds `article`s; an article needs a feed as parent.")
    parent_id: str | None = Field(default=None, max_length=36, description="The parent page (a feed).")
    title: str = Field(min_length=1, max_length=300)
    content: str = Field(default="", max_length=MAX_CONTENT, description="Rich text (HTML), sanitised on save.")
    medias: list[MediaId] = Field(
        default_factory=list, max_length=MAX_MEDIAS,
        description="Media ids (completed uploads of the caller's hotel, from the media service).",
    )
    enable_notifications: bool = Field(
        default=True, description="Notify the author (push + socket) when someone comments.",
    )
    requires_acknowledgement: bool = Field(default=False, description="Members are asked to acknowledge it.")


class PageUpdate(CamelModel):
    """The fields sent change; `null` empties `content` and `medias` (a title and the flags may not be null)."""

    title: str = Field(default=None, min_length=1, max_length=300)
    content: str | None = Field(default=None, max_length=MAX_CONTENT, description="`null` empties it.")
    medias: list[MediaId] | None = Field(default=None, max_length=MAX_MEDIAS, description="`null` removes every media.")
    enable_notifications: bool = None
    requires_acknowledgement: bool = None


class MediaRef(CamelModel):
    id: str
    file_url: str | None
    thumbnail_url: str | None


class ParentRef(CamelModel):
    id: str
    title: str
    page_type: PageType


class AuthorRef(CamelModel):
    id: str
    name: str


class PageOut(CamelModel):
    id: str
    workspace_id: str
    page_type: PageType
    parent: ParentRef | None
    title: str
    content: str
    medias: list[MediaRef]
    enable_notifications: bool
    requires_acknowledgement: bool
    author: AuthorRef
    comment_count: int
    like_count: int
    liked_by_me: bool = Field(description="Whether the caller likes this page.")
    acknowledged_by_me: bool = Field(description="Whether the caller acknowledged this page.")
    created_at: datetime
    updated_at: datetime


class CommentCreate(CamelModel):
    page_id: str = Field(min_length=1, max_length=36)
    content: str = Field(min_length=1, max_length=10_000)
    parent_id: str | None = Field(default=None, max_length=36, description="The comment this one replies to.")


class CommentUpdate(CamelModel):
    content: str = Field(min_length=1, max_length=10_000)


class CommentOut(CamelModel):
    id: str
    page_id: str
    parent_id: str | None
    author: AuthorRef
    content: str
    created_at: datetime
    updated_at: datetime


class CommentCreated(CommentOut):
    comment_count: int = Field(description="The page's comment count after this comment.")


class LikeOut(CamelModel):
    page_id: str
    liked: bool
    like_count: int


class AcknowledgementOut(CamelModel):
    page_id: str
    member_id: str
    acknowledged_at: datetime


class AcknowledgementStatus(CamelModel):
    member_id: str
    name: str
    acknowledged: bool
    acknowledged_at: datetime | None


class AcknowledgementSummary(CamelModel):
    page_id: str
    acknowledged: int
    pending: int
