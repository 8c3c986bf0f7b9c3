"""claws watch: Mini reachability and agent version, each claw's gateway state, soft delete, backups

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.tables import UtcDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mac_minis") as batch:
        batch.add_column(
            sa.Column("reachable", sa.Boolean, nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("misses", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("hits", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("agent_version", sa.String(64), nullable=True))
        batch.add_column(sa.Column("health_error", sa.Text, nullable=False, server_default=""))
    with op.batch_alter_table("claws") as batch:
        batch.add_column(sa.Column("gateway_state", sa.String(16), nullable=True))
        batch.add_column(
            sa.Column("gateway_restarts", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("gateway_error", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("gateway_since", UtcDateTime, nullable=True))
        batch.add_column(sa.Column("checked_at", UtcDateTime, nullable=True))
        batch.add_column(sa.Column("deleted_at", UtcDateTime, nullable=True))
        batch.add_column(sa.Column("backup_key", sa.String(300), nullable=True))
        batch.add_column(sa.Column("backup_at", UtcDateTime, nullable=True))


CLAW_COLUMNS = (
    "backup_at",
    "backup_key",
    "deleted_at",
    "checked_at",
    "gateway_since",
    "gateway_error",
    "gateway_restarts",
    "gateway_state",
)


def downgrade() -> None:
    with op.batch_alter_table("claws") as batch:
        for name in CLAW_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("mac_minis") as batch:
        for name in ("health_error", "agent_version", "hits", "misses", "reachable"):
            batch.drop_column(name)
