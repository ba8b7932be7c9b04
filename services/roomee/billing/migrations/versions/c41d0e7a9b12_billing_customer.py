"""billing_customer: a closed hotel's tombstone (late assigns refused) and the per-hotel lock row

Revision ID: c41d0e7a9b12
Revises: b66756d4d626
Create Date: 2026-12-06 07:10:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = 'c41d0e7a9b12'
down_revision = 'b66756d4d626'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('billing_customer',
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('closed_generation', sa.Integer(), nullable=True),
    sa.Column('closed_for_good', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_billing_customer'))
    )


def downgrade() -> None:
    op.drop_table('billing_customer')
