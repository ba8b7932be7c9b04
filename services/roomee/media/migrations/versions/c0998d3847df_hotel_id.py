"""one name for the hotel: ecosystem_id becomes hotel_id

Revision ID: c0998d3847df
Revises: b0c485960d1e
Create Date: 2026-11-30 12:10:00
"""

import sqlalchemy as sa

from roomee.kit.migrations import rename_column

revision = 'c0998d3847df'
down_revision = 'b0c485960d1e'
branch_labels = None
depends_on = None


def upgrade() -> None:
    rename_column('media', 'ecosystem_id', 'hotel_id', indexes=(
        ('ix_media_ecosystem_status_created', 'ix_media_hotel_status_created', ['hotel_id', 'status', 'created_at', 'id'], {}),
        ('uq_media_ecosystem_idempotency_key', 'uq_media_hotel_idempotency_key', ['hotel_id', 'idempotency_key'], {'unique': True, 'postgresql_where': sa.text('idempotency_key IS NOT NULL'), 'sqlite_where': sa.text('idempotency_key IS NOT NULL')}),
    ))
    rename_column('storage_quota', 'ecosystem_id', 'hotel_id')


def downgrade() -> None:
    rename_column('media', 'hotel_id', 'ecosystem_id', indexes=(
        ('ix_media_hotel_status_created', 'ix_media_ecosystem_status_created', ['ecosystem_id', 'status', 'created_at', 'id'], {}),
        ('uq_media_hotel_idempotency_key', 'uq_media_ecosystem_idempotency_key', ['ecosystem_id', 'idempotency_key'], {'unique': True, 'postgresql_where': sa.text('idempotency_key IS NOT NULL'), 'sqlite_where': sa.text('idempotency_key IS NOT NULL')}),
    ))
    rename_column('storage_quota', 'hotel_id', 'ecosystem_id')
