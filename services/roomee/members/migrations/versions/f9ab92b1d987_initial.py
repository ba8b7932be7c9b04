"""initial

Revision ID: f9ab92b1d987
Revises: 
Create Date: 2026-11-27 17:32:30.803047
"""

from alembic import op
import sqlalchemy as sa

from roomee.kit.event_tables import create_event_tables, drop_event_tables


revision = 'f9ab92b1d987'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables(op)
    op.create_table('workspace',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('ecosystem_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('locale', sa.String(length=16), server_default='fr', nullable=False),
    sa.Column('timezone', sa.String(length=64), server_default='Europe/Paris', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workspace'))
    )
    with op.batch_alter_table('workspace', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workspace_ecosystem_id'), ['ecosystem_id'], unique=False)

    op.create_table('member',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('workspace_id', sa.String(length=36), nullable=False),
    sa.Column('ecosystem_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('first_name', sa.String(length=100), server_default='', nullable=False),
    sa.Column('last_name', sa.String(length=100), server_default='', nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('dashboard_access', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('is_admin', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('locale', sa.String(length=16), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version', sa.BigInteger(), server_default='1', nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], name=op.f('fk_member_workspace_id_workspace')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_member'))
    )
    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_member_ecosystem_id'), ['ecosystem_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_member_email'), ['email'], unique=False)
        batch_op.create_index(batch_op.f('ix_member_updated_at'), ['updated_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_member_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_member_workspace_id'), ['workspace_id'], unique=False)
        batch_op.create_index('uq_member_workspace_email_live', ['workspace_id', 'email'], unique=True, postgresql_where=sa.text('deleted_at IS NULL'), sqlite_where=sa.text('deleted_at IS NULL'))

    op.create_table('onboarding',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('workspace_id', sa.String(length=36), nullable=False),
    sa.Column('ecosystem_id', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('first_name', sa.String(length=100), server_default='', nullable=False),
    sa.Column('last_name', sa.String(length=100), server_default='', nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('dashboard_access', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('is_admin', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('invited_by_member_id', sa.String(length=36), nullable=True),
    sa.Column('invited_by_name', sa.String(length=200), nullable=True),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('accepted_user_id', sa.String(length=36), nullable=True),
    sa.Column('member_id', sa.String(length=36), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], name=op.f('fk_onboarding_workspace_id_workspace')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_onboarding')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_onboarding_token_hash'))
    )
    with op.batch_alter_table('onboarding', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_onboarding_email'), ['email'], unique=False)
        batch_op.create_index(batch_op.f('ix_onboarding_workspace_id'), ['workspace_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('onboarding', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_onboarding_workspace_id'))
        batch_op.drop_index(batch_op.f('ix_onboarding_email'))

    op.drop_table('onboarding')
    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.drop_index('uq_member_workspace_email_live', postgresql_where=sa.text('deleted_at IS NULL'), sqlite_where=sa.text('deleted_at IS NULL'))
        batch_op.drop_index(batch_op.f('ix_member_workspace_id'))
        batch_op.drop_index(batch_op.f('ix_member_user_id'))
        batch_op.drop_index(batch_op.f('ix_member_updated_at'))
        batch_op.drop_index(batch_op.f('ix_member_email'))
        batch_op.drop_index(batch_op.f('ix_member_ecosystem_id'))

    op.drop_table('member')
    with op.batch_alter_table('workspace', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workspace_ecosystem_id'))

    op.drop_table('workspace')
    drop_event_tables(op)
