"""claws on the Mac Mini fleet: orgs, members, mac_minis, claws

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.tables import Id, UtcDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "orgs",
        sa.Column("slug", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
    )
    op.create_table(
        "org_members",
        sa.Column(
            "org", sa.String(64), sa.ForeignKey("orgs.slug", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.BigInteger, primary_key=True),
    )  # fmt: skip
    op.create_table(
        "mac_minis",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("hostname", sa.String(200), nullable=False, unique=True),
        sa.Column("agent_url", sa.String(500), nullable=False),
        sa.Column("agent_token_env", sa.String(128), nullable=True),
        sa.Column("agent_token_sealed", sa.Text, nullable=True),
        sa.Column("tunnel_suffix", sa.String(200), nullable=True),
        sa.Column("gateway_host", sa.String(200), nullable=True),
        sa.Column("port_low", sa.Integer, nullable=False),
        sa.Column("port_high", sa.Integer, nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_seen", UtcDateTime, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "claws",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("org", sa.String(64), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("mini_id", Id, sa.ForeignKey("mac_minis.id"), nullable=True),
        sa.Column("mini_port", sa.Integer, nullable=True),
        sa.Column("tunnel_hostname", sa.String(300), nullable=True),
        sa.Column("gateway_token_sealed", sa.Text, nullable=True),
        sa.Column("bucket", sa.String(100), nullable=True),
        sa.Column("steps", sa.Text, nullable=False, server_default="[]"),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("created_by", sa.BigInteger, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("org", "slug", name="uq_claws_org_slug"),
        sa.UniqueConstraint("mini_id", "mini_port", name="uq_claws_mini_id_mini_port"),
    )


def downgrade() -> None:
    op.drop_table("claws")
    op.drop_table("mac_minis")
    op.drop_table("org_members")
    op.drop_table("orgs")
