"""Tables of the hotel service (api-hotel): hotels, Idempotency-Keys, and the kit's saga state."""

from __future__ import annotations

import sqlalchemy as sa

from roomee.kit.db import new_metadata
from roomee.kit.saga import add_saga_tables

metadata = new_metadata()
saga_tables = add_saga_tables(metadata)

hotel = sa.Table(
    "hotel",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("phone", sa.String(64), nullable=False),
    sa.Column("address", sa.String(500), nullable=False),
    sa.Column("type", sa.String(64), nullable=True),
    sa.Column("settings", sa.JSON, nullable=True),
    sa.Column("plan", sa.String(32), nullable=False),
    # provisioning | ready | failed | deleting | deleted
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("administrator", sa.JSON, nullable=False),
    sa.Column("qr_link", sa.Text, nullable=True),
    sa.Column("qr_media_id", sa.String(64), nullable=True),
    sa.Column("subscription_id", sa.String(255), nullable=True),
    sa.Column("admin_member_id", sa.String(36), nullable=True),
    sa.Column("admin_workspace_id", sa.String(36), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_hotel_created_at_id", "created_at", "id"),
)

# POST /hotel/add's Idempotency-Key, per calling client: the request's hash and the hotel it made.
idempotency_key = sa.Table(
    "idempotency_key",
    metadata,
    sa.Column("caller", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    # in_flight (reserved, the hotel not yet committed) | done
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("hotel_id", sa.String(36), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)
