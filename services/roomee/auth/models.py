"""Tables of the auth service (api-authentication)."""

from __future__ import annotations

import sqlalchemy as sa

from roomee.kit.db import new_metadata

metadata = new_metadata()

user = sa.Table(
    "user_account",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("first_name", sa.String(100), nullable=False, server_default=""),
    sa.Column("last_name", sa.String(100), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
)

refresh_token = sa.Table(
    "refresh_token",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.String(36), sa.ForeignKey("user_account.id"), nullable=False, index=True),
    sa.Column("workspace_id", sa.String(36), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    # Every token rotated from one sign-in shares the family id: a reused token revokes the family.
    sa.Column("family_id", sa.String(36), nullable=True, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

login_failure = sa.Table(
    "login_failure",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("ip", sa.String(64), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    # What failed: sign_in (keyed by email and address), sign_up, refresh or client (keyed by address).
    sa.Column("kind", sa.String(16), nullable=False, server_default="sign_in"),
    sa.Index("ix_login_failure_email_at", "email", "at"),
    sa.Index("ix_login_failure_ip_at", "ip", "at"),
)
