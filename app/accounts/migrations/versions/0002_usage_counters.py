"""usage counters (per-key quotas, login attempts)

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_counters",
        sa.Column("subject", sa.String(200), primary_key=True),   # key:<id>:rpm, login-user:<name>, ...
        sa.Column("window_start", sa.BigInteger, primary_key=True),  # unix seconds
        sa.Column("count", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("usage_counters")
