"""initial

Revision ID: 879de79d849e
Revises: 
Create Date: 2026-11-27 17:59:01.655955
"""

from alembic import op
import sqlalchemy as sa

from roomee.kit.directory_tables import create_directory_tables, drop_directory_tables
from roomee.kit.event_tables import create_event_tables, drop_event_tables


revision = '879de79d849e'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables(op)
    create_directory_tables(op)
    op.create_table('delivery_attempt',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('notification_id', sa.String(length=36), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('recipients_count', sa.Integer(), nullable=False),
    sa.Column('recipients', sa.JSON(), nullable=False),
    sa.Column('provider_message_id', sa.String(length=255), nullable=True),
    sa.Column('response', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_attempt'))
    )
    with op.batch_alter_table('delivery_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delivery_attempt_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_delivery_attempt_notification_id'), ['notification_id'], unique=False)

    op.create_table('notification',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('event_id', sa.String(length=255), nullable=False),
    sa.Column('workspace_id', sa.String(length=36), nullable=True),
    sa.Column('ecosystem_id', sa.String(length=64), nullable=True),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=True),
    sa.Column('actor_name', sa.String(length=200), nullable=True),
    sa.Column('actor_type', sa.String(length=32), nullable=True),
    sa.Column('renders', sa.JSON(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification')),
    sa.UniqueConstraint('event_id', name=op.f('uq_notification_event_id'))
    )
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_workspace_id'), ['workspace_id'], unique=False)

    op.create_table('notification_preference',
    sa.Column('member_id', sa.String(length=36), nullable=False),
    sa.Column('workspace_id', sa.String(length=36), nullable=False),
    sa.Column('is_global_silent', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('category_prefs', sa.JSON(), nullable=False),
    sa.Column('quiet_start', sa.String(length=5), nullable=True),
    sa.Column('quiet_end', sa.String(length=5), nullable=True),
    sa.Column('quiet_timezone', sa.String(length=64), nullable=True),
    sa.Column('quiet_mode', sa.String(length=8), server_default='skip', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('member_id', 'workspace_id', name=op.f('pk_notification_preference'))
    )
    op.create_table('notification_receiver',
    sa.Column('notification_id', sa.String(length=36), nullable=False),
    sa.Column('member_id', sa.String(length=36), nullable=False),
    sa.Column('workspace_id', sa.String(length=36), nullable=False),
    sa.Column('locale', sa.String(length=16), nullable=False),
    sa.Column('channels', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('notification_id', 'member_id', name=op.f('pk_notification_receiver'))
    )
    with op.batch_alter_table('notification_receiver', schema=None) as batch_op:
        batch_op.create_index('ix_notification_receiver_inbox', ['member_id', 'workspace_id', 'created_at', 'notification_id'], unique=False)

    op.create_table('push_subscription',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('member_id', sa.String(length=36), nullable=False),
    sa.Column('workspace_id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('subscription_id', sa.String(length=128), nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_push_subscription')),
    sa.UniqueConstraint('subscription_id', name=op.f('uq_push_subscription_subscription_id'))
    )
    with op.batch_alter_table('push_subscription', schema=None) as batch_op:
        batch_op.create_index('ix_push_subscription_member', ['workspace_id', 'member_id'], unique=False)

    op.create_table('unread_counter',
    sa.Column('member_id', sa.String(length=36), nullable=False),
    sa.Column('workspace_id', sa.String(length=36), nullable=False),
    sa.Column('count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('member_id', 'workspace_id', name=op.f('pk_unread_counter'))
    )
    op.create_table('deferred_delivery',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('notification_id', sa.String(length=36), nullable=False),
    sa.Column('member_id', sa.String(length=36), nullable=False),
    sa.Column('workspace_id', sa.String(length=36), nullable=False),
    sa.Column('channels', sa.String(length=32), nullable=False),
    sa.Column('locale', sa.String(length=16), nullable=False),
    sa.Column('release_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['notification_id'], ['notification.id'], name=op.f('fk_deferred_delivery_notification_id_notification')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deferred_delivery')),
    sa.UniqueConstraint('notification_id', 'member_id', name=op.f('uq_deferred_delivery_notification_id_member_id'))
    )
    with op.batch_alter_table('deferred_delivery', schema=None) as batch_op:
        batch_op.create_index('ix_deferred_delivery_due', ['release_at', 'released_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('deferred_delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_deferred_delivery_due')

    op.drop_table('deferred_delivery')
    op.drop_table('unread_counter')
    with op.batch_alter_table('push_subscription', schema=None) as batch_op:
        batch_op.drop_index('ix_push_subscription_member')

    op.drop_table('push_subscription')
    with op.batch_alter_table('notification_receiver', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_receiver_inbox')

    op.drop_table('notification_receiver')
    op.drop_table('notification_preference')
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notification_workspace_id'))

    op.drop_table('notification')
    with op.batch_alter_table('delivery_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delivery_attempt_notification_id'))
        batch_op.drop_index(batch_op.f('ix_delivery_attempt_job_id'))

    op.drop_table('delivery_attempt')
    drop_directory_tables(op)
    drop_event_tables(op)
