"""Tables of the billing service (api-stripe)."""

from __future__ import annotations

import sqlalchemy as sa

from roomee.kit.db import new_metadata

metadata = new_metadata()

# One row per subscription a hotel (the Stripe "customer") ever had; at most one is live.
subscription = sa.Table(
    "subscription",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("customer_id", sa.String(64), nullable=False, index=True),
    sa.Column("plan_id", sa.String(32), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("provider", sa.String(16), nullable=False),
    # The provider's ids: Stripe's sub_… and cus_…, or the local provider's.
    sa.Column("external_id", sa.String(255), nullable=True, unique=True),
    sa.Column("external_customer_id", sa.String(255), nullable=True),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    # `created` (Unix seconds) of the last provider event applied: older events arrive late and are ignored.
    sa.Column("last_event_created", sa.BigInteger, nullable=True),
)
# The lock that makes assigning idempotent per hotel, even under concurrent retries.
sa.Index(
    "uq_subscription_customer_live",
    subscription.c.customer_id,
    unique=True,
    postgresql_where=subscription.c.ended_at.is_(None),
    sqlite_where=subscription.c.ended_at.is_(None),
)

# Stripe events already handled (Stripe delivers at least once).
webhook_event = sa.Table(
    "webhook_event",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=True),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

# A hotel billing was told to close (its saga compensated, or the hotel deleted): the tombstone that
# makes a late assign fail instead of leaving a subscription nobody cancels. Also the row that
# serialises a hotel's assign and close across replicas (PostgreSQL: SELECT … FOR UPDATE).
# ``closed_generation``: provisioning attempts up to this one are closed (a retried hotel assigns with
# a higher generation); ``closed_for_good``: the hotel was deleted, every assign is refused.
billing_customer = sa.Table(
    "billing_customer",
    metadata,
    sa.Column("customer_id", sa.String(64), primary_key=True),
    sa.Column("closed_generation", sa.Integer, nullable=True),
    sa.Column("closed_for_good", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
)
