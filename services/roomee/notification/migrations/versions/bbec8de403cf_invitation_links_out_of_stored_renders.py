"""invitation links out of stored renders

Invitations used to keep their email (subject, text and html with the sign-up link) in the
inviter's notification; only the in-app title and body stay.

Revision ID: bbec8de403cf
Revises: 879de79d849e
Create Date: 2026-11-30 09:12:01.675201
"""

from alembic import op
import sqlalchemy as sa


revision = 'bbec8de403cf'
down_revision = '879de79d849e'
branch_labels = None
depends_on = None

EMAIL_PARTS = ("subject", "text", "html")


def upgrade() -> None:
    notification = sa.table("notification", sa.column("id", sa.String), sa.column("type", sa.String),
                            sa.column("renders", sa.JSON))
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(notification.c.id, notification.c.renders).where(notification.c.type == "member.onboarding")
    ).all()
    for row in rows:
        renders = row.renders or {}
        kept = {locale: {k: v for k, v in parts.items() if k not in EMAIL_PARTS} for locale, parts in renders.items()}
        if kept != renders:
            connection.execute(sa.update(notification).where(notification.c.id == row.id).values(renders=kept))


def downgrade() -> None:
    pass  # the links are gone for good
