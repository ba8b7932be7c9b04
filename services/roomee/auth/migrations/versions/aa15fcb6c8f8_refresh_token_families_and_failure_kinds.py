"""refresh token families and failure kinds

Revision ID: aa15fcb6c8f8
Revises: c321cca573e9
Create Date: 2026-11-30 07:57:56.957265
"""

from alembic import op
import sqlalchemy as sa


revision = 'aa15fcb6c8f8'
down_revision = 'c321cca573e9'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('login_failure', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='sign_in', nullable=False))
        batch_op.create_index('ix_login_failure_ip_at', ['ip', 'at'], unique=False)

    with op.batch_alter_table('refresh_token', schema=None) as batch_op:
        batch_op.add_column(sa.Column('family_id', sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f('ix_refresh_token_family_id'), ['family_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('refresh_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refresh_token_family_id'))
        batch_op.drop_column('family_id')

    with op.batch_alter_table('login_failure', schema=None) as batch_op:
        batch_op.drop_index('ix_login_failure_ip_at')
        batch_op.drop_column('kind')
