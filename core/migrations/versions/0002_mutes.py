"""mutes, and suppressed flips

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.tables import Id, UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mutes",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=True),
        sa.Column("until", UtcDateTime, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("created_by", sa.BigInteger, nullable=True),
        sa.Column("ended_at", UtcDateTime, nullable=True),
    )
    op.create_index("ix_mutes_until", "mutes", ["until"])
    with op.batch_alter_table("alert_flips") as batch:
        batch.add_column(
            sa.Column("suppressed", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("alert_flips") as batch:
        batch.drop_column("suppressed")
    op.drop_table("mutes")
