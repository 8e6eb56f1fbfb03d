"""What the deploy check saw, beside ``verified``: the answer that served
(``HTTP 200 on port 8080``) or why it failed (``HTTP 500 at / …``, ``the container
exited (1)``, ``no HTTP answer … within 60s``, ``docker build failed: …``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("verify_detail", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("verify_detail")
