"""foundation: status log, job runs, audit log, alert states and flips

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.tables import Id, UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "status_log",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("node", sa.String(128), nullable=False, server_default=""),
    )
    op.create_index("ix_status_log_job_id_id", "status_log", ["job_id", "id"])
    op.create_index("ix_status_log_created_at", "status_log", ["created_at"])

    op.create_table(
        "job_runs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(128), nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("ended_at", UtcDateTime, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_job_runs_job_started_at", "job_runs", ["job", "started_at"])

    op.create_table(
        "audit_log",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("node", sa.String(128), nullable=False, server_default=""),
        sa.Column("user_id", sa.BigInteger, nullable=True),
        sa.Column("username", sa.String(128), nullable=True),
        sa.Column("chat_id", sa.BigInteger, nullable=True),
        sa.Column("command", sa.String(64), nullable=False),
        sa.Column("args", sa.Text, nullable=False, server_default=""),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False, server_default="0"),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])

    op.create_table(
        "alert_states",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("successes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("changed_at", UtcDateTime, nullable=False),
        sa.Column("last_message", sa.Text, nullable=False, server_default=""),
    )

    op.create_table(
        "alert_flips",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("old_state", sa.String(16), nullable=False),
        sa.Column("new_state", sa.String(16), nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("notified_at", UtcDateTime, nullable=True),
    )
    op.create_index("ix_alert_flips_key_at", "alert_flips", ["key", "at"])
    op.create_index("ix_alert_flips_notified_at", "alert_flips", ["notified_at"])


def downgrade() -> None:
    for table in ("alert_flips", "alert_states", "audit_log", "job_runs", "status_log"):
        op.drop_table(table)
