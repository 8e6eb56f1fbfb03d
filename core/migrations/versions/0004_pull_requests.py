"""Where a request's last publish went when it was not main: the branch
(``appgen/request-N``) and its pull request.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("branch", sa.String(255)))
        batch.add_column(sa.Column("pull_request_url", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("pull_request_url")
        batch.drop_column("branch")
