"""Tables of the notification service (api-notification).

Member ids are per workspace (a member row of the members service belongs to one workspace), so
``(member_id, workspace_id)`` identifies a recipient; every query of a member's data filters on both.
"""

from __future__ import annotations

import sqlalchemy as sa

from roomee.kit.db import new_metadata
from roomee.kit.directory import add_directory_tables

metadata = new_metadata()

# One row per consumed event that concerns at least one recipient. The id is derived from the
# event id, so a redelivered or replayed event lands on the same row (insert ... on conflict skip).
notification = sa.Table(
    "notification",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("event_id", sa.String(255), nullable=False, unique=True),
    sa.Column("workspace_id", sa.String(36), nullable=True, index=True),
    sa.Column("hotel_id", sa.String(64), nullable=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("category", sa.String(32), nullable=False),
    sa.Column("actor_id", sa.String(64), nullable=True),
    sa.Column("actor_name", sa.String(200), nullable=True),
    sa.Column("actor_type", sa.String(32), nullable=True),
    # {locale: {"title": ..., "body": ...}} for every locale its recipients read.
    sa.Column("renders", sa.JSON, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

notification_receiver = sa.Table(
    "notification_receiver",
    metadata,
    # No foreign key: written in the notification's transaction, and a per-row check would cost
    # the fan-out (10 000 trigger calls on PostgreSQL for 10 000 receivers).
    sa.Column("notification_id", sa.String(36), primary_key=True),
    sa.Column("member_id", sa.String(36), primary_key=True),
    sa.Column("workspace_id", sa.String(36), nullable=False),
    sa.Column("locale", sa.String(16), nullable=False),
    sa.Column("channels", sa.String(64), nullable=False),  # what this member was sent: "socket,push,email"
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
    # The inbox of one member, newest first.
    sa.Index("ix_notification_receiver_inbox", "member_id", "workspace_id", "created_at", "notification_id"),
)

delivery_attempt = sa.Table(
    "delivery_attempt",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("notification_id", sa.String(36), nullable=False, index=True),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("recipients_count", sa.Integer, nullable=False),
    sa.Column("recipients", sa.JSON, nullable=False),
    sa.Column("provider_message_id", sa.String(255), nullable=True),
    sa.Column("response", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

unread_counter = sa.Table(
    "unread_counter",
    metadata,
    sa.Column("member_id", sa.String(36), primary_key=True),
    sa.Column("workspace_id", sa.String(36), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

notification_preference = sa.Table(
    "notification_preference",
    metadata,
    sa.Column("member_id", sa.String(36), primary_key=True),
    sa.Column("workspace_id", sa.String(36), primary_key=True),
    sa.Column("is_global_silent", sa.Boolean, nullable=False, server_default=sa.false()),
    # {category: {"app": bool, "push": bool, "email": bool}}; a missing entry allows everything.
    sa.Column("category_prefs", sa.JSON, nullable=False),
    sa.Column("quiet_start", sa.String(5), nullable=True),  # "22:00"; null: no quiet hours
    sa.Column("quiet_end", sa.String(5), nullable=True),  # "07:00"
    sa.Column("quiet_timezone", sa.String(64), nullable=True),  # null: the member's timezone
    sa.Column("quiet_mode", sa.String(8), nullable=False, server_default="skip"),  # skip | defer
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

push_subscription = sa.Table(
    "push_subscription",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("member_id", sa.String(36), nullable=False),
    sa.Column("workspace_id", sa.String(36), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),  # the account: only it may move the device
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("subscription_id", sa.String(128), nullable=False),  # OneSignal subscription id
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_push_subscription_member", "workspace_id", "member_id"),
    # One registration per (workspace, member, device): a device id another account registered is
    # neither refused (which would confirm it exists) nor taken over (its pushes stay where they go).
    sa.UniqueConstraint("workspace_id", "member_id", "subscription_id"),
    sa.Index("ix_push_subscription_device", "subscription_id"),
)

# The local copy of the members service's directory (POST /members/sync and member events).
DIRECTORY_TABLES = add_directory_tables(metadata)
member_directory, workspace_directory, sync_cursor = (
    DIRECTORY_TABLES.member, DIRECTORY_TABLES.workspace, DIRECTORY_TABLES.sync_cursor
)

# Push and email held back by quiet hours in "defer" mode; the release worker sends them when
# the member's quiet period ends (durable: a restart does not lose them).
deferred_delivery = sa.Table(
    "deferred_delivery",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("notification_id", sa.String(36), sa.ForeignKey("notification.id"), nullable=False),
    sa.Column("member_id", sa.String(36), nullable=False),
    sa.Column("workspace_id", sa.String(36), nullable=False),
    sa.Column("channels", sa.String(32), nullable=False),  # "push,email"
    sa.Column("locale", sa.String(16), nullable=False),
    sa.Column("release_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("notification_id", "member_id"),
    sa.Index("ix_deferred_delivery_due", "release_at", "released_at"),
)
