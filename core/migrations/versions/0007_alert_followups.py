"""alerts: what was announced, held-back flips, reminders, kinds of flips, what silenced one

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.tables import UtcDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert_states") as batch:
        batch.add_column(sa.Column("announced", sa.String(16), nullable=False, server_default="up"))
        batch.add_column(sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("reminded_at", UtcDateTime, nullable=True))
    # Keys down before this revision were announced (or muted, and then nobody hears of them).
    op.execute("UPDATE alert_states SET announced = state")
    with op.batch_alter_table("alert_flips") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="flip"))
        batch.add_column(
            sa.Column("silenced_by", sa.String(200), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("alert_flips") as batch:
        batch.drop_column("silenced_by")
        batch.drop_column("kind")
    with op.batch_alter_table("alert_states") as batch:
        batch.drop_column("reminded_at")
        batch.drop_column("held")
        batch.drop_column("announced")
