"""The kit's event tables, added to every service's metadata.

``outbox`` holds events written in the caller's transaction until the relay publishes them;
``inbox`` remembers which event ids a queue's consumer has already handled (idempotence).
Both use generic SQLAlchemy types so one definition serves SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa

OUTBOX = "outbox"
INBOX = "inbox"

# Lightweight table clauses for DML; they resolve to whichever service database the session uses
# (its SQLite file, or its PostgreSQL schema through search_path).
outbox_table = sa.table(
    OUTBOX,
    sa.column("id", sa.String(36)),
    sa.column("routing_key", sa.String(255)),
    sa.column("body", sa.Text),
    sa.column("headers", sa.Text),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("published_at", sa.DateTime(timezone=True)),
)

inbox_table = sa.table(
    INBOX,
    sa.column("queue", sa.String(255)),
    sa.column("event_id", sa.String(255)),
    sa.column("handled_at", sa.DateTime(timezone=True)),
)


def add_event_tables(metadata: sa.MetaData) -> None:
    """Add ``outbox`` and ``inbox`` to a service's metadata (idempotent)."""
    if OUTBOX not in metadata.tables:
        published_at = sa.Column("published_at", sa.DateTime(timezone=True), nullable=True)
        sa.Table(
            OUTBOX,
            metadata,
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("routing_key", sa.String(255), nullable=False),
            sa.Column("body", sa.Text, nullable=False),
            sa.Column("headers", sa.Text, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            published_at,
            # Partial index: the relay only ever scans unpublished rows in creation order.
            sa.Index(
                "ix_outbox_unpublished",
                "created_at",
                postgresql_where=published_at.is_(None),
                sqlite_where=published_at.is_(None),
            ),
            sa.Index("ix_outbox_published_at", "published_at"),
        )
    if INBOX not in metadata.tables:
        sa.Table(
            INBOX,
            metadata,
            sa.Column("queue", sa.String(255), primary_key=True),
            sa.Column("event_id", sa.String(255), primary_key=True),
            sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
            sa.Index("ix_inbox_handled_at", "handled_at"),
        )
