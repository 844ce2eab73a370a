"""inference history

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inference_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_name", sa.String(64)),            # None: an environment key or no credential
        sa.Column("key_id", sa.Integer),
        sa.Column("credential", sa.String(16), nullable=False),  # api_key, token, session, env_key, none
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("model", sa.String(64)),
        sa.Column("model_version", sa.String(128)),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("input_summary", sa.Text, nullable=False),   # JSON: sizes and sha256, never content
        sa.Column("output", sa.Text),                          # JSON answer (truncated past HISTORY_MAX_OUTPUT)
        sa.Column("input_text", sa.Text),                      # HISTORY=full only
        sa.Column("image_path", sa.String(255)),               # HISTORY=full only, relative to HISTORY_DIR
    )
    op.create_index("ix_inference_records_user_id", "inference_records", ["user_name", "id"])
    op.create_index("ix_inference_records_created_at", "inference_records", ["created_at"])


def downgrade() -> None:
    op.drop_table("inference_records")
