"""one name for the hotel: ecosystem_id becomes hotel_id

Revision ID: 0a85f7ed5cbd
Revises: 4bae1e38c9ef
Create Date: 2026-11-30 12:10:00
"""


from roomee.kit.migrations import rename_column

revision = '0a85f7ed5cbd'
down_revision = '4bae1e38c9ef'
branch_labels = None
depends_on = None


def upgrade() -> None:
    rename_column('workspace', 'ecosystem_id', 'hotel_id', indexes=(
        ('ix_workspace_ecosystem_id', 'ix_workspace_hotel_id', ['hotel_id'], {}),
    ))
    rename_column('member', 'ecosystem_id', 'hotel_id', indexes=(
        ('ix_member_ecosystem_id', 'ix_member_hotel_id', ['hotel_id'], {}),
    ))
    rename_column('onboarding', 'ecosystem_id', 'hotel_id')


def downgrade() -> None:
    rename_column('workspace', 'hotel_id', 'ecosystem_id', indexes=(
        ('ix_workspace_hotel_id', 'ix_workspace_ecosystem_id', ['ecosystem_id'], {}),
    ))
    rename_column('member', 'hotel_id', 'ecosystem_id', indexes=(
        ('ix_member_hotel_id', 'ix_member_ecosystem_id', ['ecosystem_id'], {}),
    ))
    rename_column('onboarding', 'hotel_id', 'ecosystem_id')
