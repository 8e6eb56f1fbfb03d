"""What each generation contacted, was refused and cost, as its egress gateway
measured it: the receipt (JSON), and its tokens and cost as columns to query.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("agent_tokens", sa.Integer()))
        batch.add_column(sa.Column("agent_cost_usd", sa.Float()))
        batch.add_column(sa.Column("receipt", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("receipt")
        batch.drop_column("agent_cost_usd")
        batch.drop_column("agent_tokens")
