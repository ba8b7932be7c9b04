"""The ``outbox`` and ``inbox`` DDL of every service's initial migration, written once.

This is the migration-time twin of :func:`roomee.kit.events.tables.add_event_tables` (the models).
It is frozen on purpose: databases already migrated ran exactly these statements, so a later change to
the event tables needs a new revision in each service, never an edit here.
"""

from __future__ import annotations

import sqlalchemy as sa

# The relay's partial index (unpublished rows in creation order), spelled for both dialects.
_UNPUBLISHED = dict(
    postgresql_where=sa.text("published_at IS NULL"),
    sqlite_where=sa.text("published_at IS NULL"),
)


def create_event_tables(op) -> None:
    """Create ``inbox`` and ``outbox`` with their indexes (call from an initial ``upgrade()``)."""
    op.create_table(
        "inbox",
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("queue", "event_id", name=op.f("pk_inbox")),
    )
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.create_index("ix_inbox_handled_at", ["handled_at"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("routing_key", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_published_at", ["published_at"], unique=False)
        batch_op.create_index("ix_outbox_unpublished", ["created_at"], unique=False, **_UNPUBLISHED)


def drop_event_tables(op) -> None:
    """Drop what :func:`create_event_tables` created (call from an initial ``downgrade()``)."""
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_unpublished", **_UNPUBLISHED)
        batch_op.drop_index("ix_outbox_published_at")
    op.drop_table("outbox")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_handled_at")
    op.drop_table("inbox")
