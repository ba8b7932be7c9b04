"""member change feed

Revision ID: 4bae1e38c9ef
Revises: f9ab92b1d987
Create Date: 2026-11-27 19:23:15.471194
"""

from alembic import op
import sqlalchemy as sa


revision = '4bae1e38c9ef'
down_revision = 'f9ab92b1d987'
branch_labels = None
depends_on = None


def upgrade() -> None:
    counter = op.create_table('change_counter',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_change_counter'))
    )
    # Existing members keep position 0; every later change takes the next position.
    op.bulk_insert(counter, [{'name': 'member', 'value': 0}])
    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.add_column(sa.Column('change_seq', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.create_index(batch_op.f('ix_member_change_seq'), ['change_seq'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_member_change_seq'))
        batch_op.drop_column('change_seq')

    op.drop_table('change_counter')
