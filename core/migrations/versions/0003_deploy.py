"""What the launch scanners and the deploy check said about a request's app:
``deployable``, ``deploy_reason`` and ``verified`` (built | served | failed).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("deployable", sa.Boolean()))
        batch.add_column(sa.Column("deploy_reason", sa.Text()))
        batch.add_column(sa.Column("verified", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("verified")
        batch.drop_column("deploy_reason")
        batch.drop_column("deployable")
