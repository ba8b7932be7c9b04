"""Tables of the members service (api-staff-member)."""

from __future__ import annotations

import sqlalchemy as sa

from roomee.kit.db import new_metadata

metadata = new_metadata()

workspace = sa.Table(
    "workspace",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("hotel_id", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("locale", sa.String(16), nullable=False, server_default="fr"),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="Europe/Paris"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
)

member = sa.Table(
    "member",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("workspace_id", sa.String(36), sa.ForeignKey("workspace.id"), nullable=False, index=True),
    sa.Column("hotel_id", sa.String(64), nullable=False, index=True),
    sa.Column("user_id", sa.String(36), nullable=True, index=True),
    sa.Column("email", sa.String(320), nullable=False, index=True),
    sa.Column("first_name", sa.String(100), nullable=False, server_default=""),
    sa.Column("last_name", sa.String(100), nullable=False, server_default=""),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("dashboard_access", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("locale", sa.String(16), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
    # Position in the change feed (POST /members/sync); see change_counter.
    sa.Column("change_seq", sa.BigInteger, nullable=False, server_default="0", index=True),
)
# One live membership per email and workspace; a removed member may be invited again.
sa.Index(
    "uq_member_workspace_email_live",
    member.c.workspace_id,
    member.c.email,
    unique=True,
    postgresql_where=member.c.deleted_at.is_(None),
    sqlite_where=member.c.deleted_at.is_(None),
)

onboarding = sa.Table(
    "onboarding",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("workspace_id", sa.String(36), sa.ForeignKey("workspace.id"), nullable=False, index=True),
    sa.Column("hotel_id", sa.String(64), nullable=False),
    sa.Column("email", sa.String(320), nullable=False, index=True),
    sa.Column("first_name", sa.String(100), nullable=False, server_default=""),
    sa.Column("last_name", sa.String(100), nullable=False, server_default=""),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("dashboard_access", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("invited_by_member_id", sa.String(36), nullable=True),
    sa.Column("invited_by_name", sa.String(200), nullable=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("accepted_user_id", sa.String(36), nullable=True),
    sa.Column("member_id", sa.String(36), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# One row per feed. Each member change increments it in its own transaction; the row lock is
# held until commit, so positions become visible in commit order and a reader paging by
# position never skips a change that commits late (which paging by updated_at could).
change_counter = sa.Table(
    "change_counter",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
