"""Revisions of a request: each follow-up prompt is one more revision (the first
publish is revision 1), with what it started from, published and rendered, and the
review feedback it addressed; the request records the revision its latest run
worked on.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revisions",
        sa.Column("request_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("revision", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("flow_run_id", sa.String(64)),
        sa.Column("base_commit", sa.String(64)),
        sa.Column("commit_sha", sa.String(64)),
        sa.Column("changed", sa.Boolean()),
        sa.Column("error", sa.Text()),
        sa.Column("agent_tokens", sa.Integer()),
        sa.Column("agent_cost_usd", sa.Float()),
        sa.Column("rendered", sa.JSON()),
        sa.Column("review", sa.JSON()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_revisions_flow_run_id", "revisions", ["flow_run_id"])
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("revision", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("revision")
    op.drop_index("ix_revisions_flow_run_id", "revisions")
    op.drop_table("revisions")
