"""sessions, their revocation feed, password resets

Revision ID: 5d2e8b7c41a9
Revises: aa15fcb6c8f8
Create Date: 2026-12-06 07:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '5d2e8b7c41a9'
down_revision = 'aa15fcb6c8f8'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('user_session',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoke_reason', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_user_session_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_session'))
    )
    with op.batch_alter_table('user_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_session_user_id'), ['user_id'], unique=False)

    op.create_table('session_revocation',
    sa.Column('position', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('session_id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('position', name=op.f('pk_session_revocation'))
    )
    with op.batch_alter_table('session_revocation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_session_revocation_revoked_at'), ['revoked_at'], unique=False)

    counter = op.create_table('revocation_counter',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_revocation_counter'))
    )
    op.bulk_insert(counter, [{'name': 'session', 'value': 0}])

    op.create_table('password_reset',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_password_reset_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_password_reset')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_password_reset_token_hash'))
    )
    with op.batch_alter_table('password_reset', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_password_reset_user_id'), ['user_id'], unique=False)

    op.create_table('password_reset_request',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_password_reset_request'))
    )
    with op.batch_alter_table('password_reset_request', schema=None) as batch_op:
        batch_op.create_index('ix_password_reset_request_email_ip_at', ['email', 'ip', 'at'], unique=False)
        batch_op.create_index('ix_password_reset_request_ip_at', ['ip', 'at'], unique=False)

    with op.batch_alter_table('refresh_token', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_id', sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f('ix_refresh_token_session_id'), ['session_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('refresh_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refresh_token_session_id'))
        batch_op.drop_column('session_id')

    with op.batch_alter_table('password_reset_request', schema=None) as batch_op:
        batch_op.drop_index('ix_password_reset_request_ip_at')
        batch_op.drop_index('ix_password_reset_request_email_ip_at')
    op.drop_table('password_reset_request')

    with op.batch_alter_table('password_reset', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_password_reset_user_id'))
    op.drop_table('password_reset')

    op.drop_table('revocation_counter')

    with op.batch_alter_table('session_revocation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_session_revocation_revoked_at'))
    op.drop_table('session_revocation')

    with op.batch_alter_table('user_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_session_user_id'))
    op.drop_table('user_session')
