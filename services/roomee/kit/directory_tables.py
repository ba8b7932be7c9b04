"""The member directory's DDL in the initial migrations of news and notification, written once.

The migration-time twin of :func:`roomee.kit.directory.add_directory_tables` as it stood at those
revisions: frozen on purpose (``ecosystem_id`` included: each service's later ``hotel_id`` revision
renames it), since databases already migrated ran exactly these statements. A change to the
directory tables needs a new revision in each service, never an edit here.
"""

from __future__ import annotations

import sqlalchemy as sa


def create_directory_tables(op) -> None:
    """Create ``member_directory``, ``workspace_directory`` and ``sync_cursor`` (initial ``upgrade()``)."""
    op.create_table(
        "member_directory",
        sa.Column("member_id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("ecosystem_id", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("locale", sa.String(length=16), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_directory")),
    )
    with op.batch_alter_table("member_directory", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_directory_workspace_id"), ["workspace_id"], unique=False)

    op.create_table(
        "sync_cursor",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sync_cursor")),
    )
    op.create_table(
        "workspace_directory",
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("ecosystem_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("locale", sa.String(length=16), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_workspace_directory")),
    )


def drop_directory_tables(op) -> None:
    """Drop what :func:`create_directory_tables` created (initial ``downgrade()``)."""
    op.drop_table("workspace_directory")
    op.drop_table("sync_cursor")
    with op.batch_alter_table("member_directory", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_directory_workspace_id"))
    op.drop_table("member_directory")
