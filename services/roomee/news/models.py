"""Tables of the news service (api-news): the page tree, comments, likes and acknowledgements,
and the local member directory (``roomee.kit.directory``) that gives events their receivers."""

from __future__ import annotations

import sqlalchemy as sa

from roomee.kit.db import new_metadata
from roomee.kit.directory import add_directory_tables

metadata = new_metadata()

DIRECTORY_TABLES = add_directory_tables(metadata)

# A feed holds articles; pages form a tree through parent_id (same workspace only).
page = sa.Table(
    "page",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("workspace_id", sa.String(36), nullable=False),
    sa.Column("hotel_id", sa.String(64), nullable=True),
    sa.Column("parent_id", sa.String(36), sa.ForeignKey("page.id"), nullable=True),
    sa.Column("page_type", sa.String(16), nullable=False),
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("content", sa.Text, nullable=False, server_default=""),
    # [{id, fileUrl, thumbnailUrl}] as checked with the media service when the page was saved.
    sa.Column("medias", sa.JSON, nullable=False),
    sa.Column("enable_notifications", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("requires_acknowledgement", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("author_id", sa.String(36), nullable=False),
    sa.Column("author_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("comment_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("like_count", sa.Integer, nullable=False, server_default="0"),
    # A client's retry of the same create returns the first page (Idempotency-Key header).
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    # The feed read: a parent's live children, newest first.
    sa.Index("ix_page_feed", "workspace_id", "parent_id", "created_at", "id"),
    sa.Index("uq_page_idempotency", "workspace_id", "author_id", "idempotency_key", unique=True),
)

comment = sa.Table(
    "comment",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("page_id", sa.String(36), sa.ForeignKey("page.id"), nullable=False),
    sa.Column("workspace_id", sa.String(36), nullable=False),
    sa.Column("parent_id", sa.String(36), sa.ForeignKey("comment.id"), nullable=True),  # a reply
    sa.Column("author_id", sa.String(36), nullable=False),
    sa.Column("author_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_comment_page", "page_id", "created_at", "id"),
    sa.Index("uq_comment_idempotency", "workspace_id", "author_id", "idempotency_key", unique=True),
)

page_like = sa.Table(
    "page_like",
    metadata,
    sa.Column("page_id", sa.String(36), sa.ForeignKey("page.id"), primary_key=True),
    sa.Column("member_id", sa.String(36), primary_key=True),
    sa.Column("workspace_id", sa.String(36), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

acknowledgement = sa.Table(
    "acknowledgement",
    metadata,
    sa.Column("page_id", sa.String(36), sa.ForeignKey("page.id"), primary_key=True),
    sa.Column("member_id", sa.String(36), primary_key=True),
    sa.Column("workspace_id", sa.String(36), nullable=False),
    sa.Column("member_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=False),
)
