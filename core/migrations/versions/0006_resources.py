"""shared resources: leases

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.tables import Id, UtcDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("lease", sa.String(32), nullable=False),
        sa.Column("resource", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("queued_at", UtcDateTime, nullable=False),
        sa.Column("acquired_at", UtcDateTime, nullable=True),
        sa.Column("heartbeat_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("lease", name="uq_leases_lease"),
    )
    op.create_index("ix_leases_resource_state", "leases", ["resource", "state"])


def downgrade() -> None:
    op.drop_index("ix_leases_resource_state", "leases")
    op.drop_table("leases")
