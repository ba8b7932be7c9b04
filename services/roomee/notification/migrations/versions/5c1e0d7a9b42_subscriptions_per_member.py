"""device subscriptions keyed by (workspace, member, device id)

A OneSignal subscription id was unique across the platform: registering one another account held
answered 409, which told anyone that the id exists. Each member of each workspace now has its own
registration of a device id; the provider's reports still deactivate a device id everywhere.

Revision ID: 5c1e0d7a9b42
Revises: 7d2725af3383
Create Date: 2026-12-06 07:40:00.000000
"""

from alembic import op


revision = '5c1e0d7a9b42'
down_revision = '7d2725af3383'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('push_subscription', schema=None) as batch_op:
        batch_op.drop_constraint('uq_push_subscription_subscription_id', type_='unique')
        batch_op.create_unique_constraint(
            'uq_push_subscription_workspace_id_member_id_subscription_id', ['workspace_id', 'member_id', 'subscription_id'])
        batch_op.create_index('ix_push_subscription_device', ['subscription_id'], unique=False)


def downgrade() -> None:
    # Back to one registration per device id: the most recently updated one is kept.
    op.execute(
        "DELETE FROM push_subscription WHERE id IN (SELECT p.id FROM push_subscription p JOIN push_subscription q "
        "ON p.subscription_id = q.subscription_id AND (p.updated_at < q.updated_at "
        "OR (p.updated_at = q.updated_at AND p.id < q.id)))"
    )
    with op.batch_alter_table('push_subscription', schema=None) as batch_op:
        batch_op.drop_index('ix_push_subscription_device')
        batch_op.drop_constraint('uq_push_subscription_workspace_id_member_id_subscription_id', type_='unique')
        batch_op.create_unique_constraint('uq_push_subscription_subscription_id', ['subscription_id'])
