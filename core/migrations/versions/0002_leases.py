"""Leases that expire with their holder: the claim's process, the flow runs of each
request, and the generator slots.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("claim_process", sa.String(300)))
    op.create_table(
        "request_runs",
        sa.Column("flow_run_id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_request_runs_request_id", "request_runs", ["request_id"])
    op.create_table(
        "generator_slots",
        sa.Column("slot", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("holder", sa.String(64)),
        sa.Column("holder_process", sa.String(300)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("generator_slots")
    op.drop_index("ix_request_runs_request_id", table_name="request_runs")
    op.drop_table("request_runs")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("claim_process")
