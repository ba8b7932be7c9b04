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
    # The session the token renews (null: issued before sessions existed; its next refresh opens one).
    sa.Column("session_id", sa.String(36), nullable=True, index=True),
)

# A sign-in (or sign-up) and every token renewed from it, whatever workspace it switches to: access tokens
# carry its id (claim `sid`). Sign-out, a password change or a reset ends it (revoked_at) everywhere.
user_session = sa.Table(
    "user_session",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.String(36), sa.ForeignKey("user_account.id"), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    # sign_out, password_change or password_reset
    sa.Column("revoke_reason", sa.String(32), nullable=True),
)

# The feed every process follows (GET /users/sessions/revocations): one row per ended session, at a
# position taken from revocation_counter in the revoking transaction. The counter row stays locked until
# commit, so positions become visible in commit order and a reader never skips one that commits late.
session_revocation = sa.Table(
    "session_revocation",
    metadata,
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("session_id", sa.String(36), nullable=False),
    sa.Column("user_id", sa.String(36), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

revocation_counter = sa.Table(
    "revocation_counter",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

# Single-use password reset links (only the token's SHA-256 is stored).
password_reset = sa.Table(
    "password_reset",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.String(36), sa.ForeignKey("user_account.id"), nullable=False, index=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
)

# Every POST /users/password/forgot, known email or not, for its throttles (per address, per email and address).
password_reset_request = sa.Table(
    "password_reset_request",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("ip", sa.String(64), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_password_reset_request_ip_at", "ip", "at"),
    sa.Index("ix_password_reset_request_email_ip_at", "email", "ip", "at"),
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
