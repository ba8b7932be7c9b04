"""Tables of the media service (api-media)."""

from __future__ import annotations

import sqlalchemy as sa

from roomee.kit.db import new_metadata

metadata = new_metadata()

# One row per hotel. `quota_bytes` is null until a `roomee.storage.media` event sets
# it: services may upload before (the hotel's QR code comes before its storage step), members may not.
storage_quota = sa.Table(
    "storage_quota",
    metadata,
    sa.Column("hotel_id", sa.String(64), primary_key=True),
    sa.Column("quota_bytes", sa.BigInteger, nullable=True),
    sa.Column("max_size", sa.BigInteger, nullable=True),
    sa.Column("unit", sa.String(8), nullable=True),
    sa.Column("used_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("reserved_bytes", sa.BigInteger, nullable=False, server_default="0"),
    # When the quota event was emitted: an older event arriving late changes nothing.
    sa.Column("quota_set_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

media = sa.Table(
    "media",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("hotel_id", sa.String(64), nullable=False),
    sa.Column("workspace_id", sa.String(36), nullable=True),
    # A member id, or ``service:<name>`` for server-side uploads.
    sa.Column("uploaded_by", sa.String(100), nullable=False),
    sa.Column("file_name", sa.String(255), nullable=False),
    sa.Column("object_key", sa.String(300), nullable=False, unique=True),
    sa.Column("thumbnail_key", sa.String(300), nullable=True),
    sa.Column("declared_type", sa.String(100), nullable=False),
    sa.Column("declared_size", sa.BigInteger, nullable=False),
    # What this media holds of its hotel's quota while pending (0 for server-side uploads).
    sa.Column("reserved_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("content_type", sa.String(100), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("thumbnail_type", sa.String(100), nullable=True),
    sa.Column("thumbnail_size", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("width", sa.Integer, nullable=True),
    sa.Column("height", sa.Integer, nullable=True),
    sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
    # pending -> completed | rejected | expired | deleted; completed -> deleted.
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    # Set once the objects of a media that is gone (deleted, expired, rejected) are removed from storage.
    sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
)
sa.Index("ix_media_hotel_status_created", media.c.hotel_id, media.c.status, media.c.created_at, media.c.id)
sa.Index("ix_media_pending_expiry", media.c.status, media.c.expires_at)
GONE_STATUSES = ("deleted", "expired", "rejected")
_unpurged = sa.and_(media.c.purged_at.is_(None), media.c.status.in_(GONE_STATUSES))
sa.Index("ix_media_unpurged", media.c.status, postgresql_where=_unpurged, sqlite_where=_unpurged)
sa.Index(
    "uq_media_hotel_idempotency_key",
    media.c.hotel_id,
    media.c.idempotency_key,
    unique=True,
    postgresql_where=media.c.idempotency_key.isnot(None),
    sqlite_where=media.c.idempotency_key.isnot(None),
)
