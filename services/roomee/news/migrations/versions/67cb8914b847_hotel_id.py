"""one name for the hotel: ecosystem_id becomes hotel_id

Revision ID: 67cb8914b847
Revises: de113c22c4dd
Create Date: 2026-11-30 12:10:00
"""


from roomee.kit.migrations import rename_column

revision = '67cb8914b847'
down_revision = 'de113c22c4dd'
branch_labels = None
depends_on = None


def upgrade() -> None:
    rename_column('member_directory', 'ecosystem_id', 'hotel_id')
    rename_column('page', 'ecosystem_id', 'hotel_id')
    rename_column('workspace_directory', 'ecosystem_id', 'hotel_id')


def downgrade() -> None:
    rename_column('member_directory', 'hotel_id', 'ecosystem_id')
    rename_column('page', 'hotel_id', 'ecosystem_id')
    rename_column('workspace_directory', 'hotel_id', 'ecosystem_id')
