"""The requests table.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("request_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("app_name", sa.String(100)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("repo_url", sa.Text()),
        sa.Column("repo_id", sa.String(64)),
        sa.Column("commit_sha", sa.String(64)),
        sa.Column("flow_run_id", sa.String(64)),
        sa.Column("error", sa.Text()),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("claimed_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_requests_flow_run_id", "requests", ["flow_run_id"])


def downgrade() -> None:
    op.drop_index("ix_requests_flow_run_id", table_name="requests")
    op.drop_table("requests")
