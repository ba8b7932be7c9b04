"""media and storage quota

Revision ID: b0c485960d1e
Revises: 
Create Date: 2026-11-30 07:55:59
"""

from alembic import op
import sqlalchemy as sa

from roomee.kit.event_tables import create_event_tables, drop_event_tables


revision = 'b0c485960d1e'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables(op)
    op.create_table('media',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('ecosystem_id', sa.String(length=64), nullable=False),
    sa.Column('workspace_id', sa.String(length=36), nullable=True),
    sa.Column('uploaded_by', sa.String(length=100), nullable=False),
    sa.Column('file_name', sa.String(length=255), nullable=False),
    sa.Column('object_key', sa.String(length=300), nullable=False),
    sa.Column('thumbnail_key', sa.String(length=300), nullable=True),
    sa.Column('declared_type', sa.String(length=100), nullable=False),
    sa.Column('declared_size', sa.BigInteger(), nullable=False),
    sa.Column('reserved_bytes', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('content_type', sa.String(length=100), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('thumbnail_type', sa.String(length=100), nullable=True),
    sa.Column('thumbnail_size', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('public', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('purged_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_media')),
    sa.UniqueConstraint('object_key', name=op.f('uq_media_object_key'))
    )
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.create_index('ix_media_ecosystem_status_created', ['ecosystem_id', 'status', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_media_pending_expiry', ['status', 'expires_at'], unique=False)
        batch_op.create_index('ix_media_unpurged', ['status'], unique=False, postgresql_where=sa.text("purged_at IS NULL AND status IN ('deleted', 'expired', 'rejected')"), sqlite_where=sa.text("purged_at IS NULL AND status IN ('deleted', 'expired', 'rejected')"))
        batch_op.create_index('uq_media_ecosystem_idempotency_key', ['ecosystem_id', 'idempotency_key'], unique=True, postgresql_where=sa.text('idempotency_key IS NOT NULL'), sqlite_where=sa.text('idempotency_key IS NOT NULL'))

    op.create_table('storage_quota',
    sa.Column('ecosystem_id', sa.String(length=64), nullable=False),
    sa.Column('quota_bytes', sa.BigInteger(), nullable=True),
    sa.Column('max_size', sa.BigInteger(), nullable=True),
    sa.Column('unit', sa.String(length=8), nullable=True),
    sa.Column('used_bytes', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('reserved_bytes', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('quota_set_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('ecosystem_id', name=op.f('pk_storage_quota'))
    )


def downgrade() -> None:
    op.drop_table('storage_quota')
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.drop_index('uq_media_ecosystem_idempotency_key', postgresql_where=sa.text('idempotency_key IS NOT NULL'), sqlite_where=sa.text('idempotency_key IS NOT NULL'))
        batch_op.drop_index('ix_media_unpurged', postgresql_where=sa.text("purged_at IS NULL AND status IN ('deleted', 'expired', 'rejected')"), sqlite_where=sa.text("purged_at IS NULL AND status IN ('deleted', 'expired', 'rejected')"))
        batch_op.drop_index('ix_media_pending_expiry')
        batch_op.drop_index('ix_media_ecosystem_status_created')

    op.drop_table('media')
    drop_event_tables(op)
