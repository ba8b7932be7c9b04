"""one name for the hotel: ecosystem_id becomes hotel_id

Revision ID: 7d2725af3383
Revises: bbec8de403cf
Create Date: 2026-11-30 12:10:00
"""


from roomee.kit.migrations import rename_column

revision = '7d2725af3383'
down_revision = 'bbec8de403cf'
branch_labels = None
depends_on = None


def upgrade() -> None:
    rename_column('member_directory', 'ecosystem_id', 'hotel_id')
    rename_column('notification', 'ecosystem_id', 'hotel_id')
    rename_column('workspace_directory', 'ecosystem_id', 'hotel_id')


def downgrade() -> None:
    rename_column('member_directory', 'hotel_id', 'ecosystem_id')
    rename_column('notification', 'hotel_id', 'ecosystem_id')
    rename_column('workspace_directory', 'hotel_id', 'ecosystem_id')
