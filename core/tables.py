"""The database schema (SQLAlchemy Core tables); alembic migrations create it on each backend.

Times are stored as timezone-aware UTC everywhere (SQLite keeps them as ISO text, so ``UtcDateTime``
puts the zone back on read). Ids are 64-bit on PostgreSQL and SQLite's rowid on SQLite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Id = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend; naive values are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


status_log = Table(
    "status_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("job_id", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("node", String(128), nullable=False, server_default=""),
    Index("ix_status_log_job_id_id", "job_id", "id"),
    Index("ix_status_log_created_at", "created_at"),
)

job_runs = Table(
    "job_runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("job", String(128), nullable=False),
    Column("node", String(128), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime, nullable=True),
    # running | ok | warning | failed | skipped
    Column("outcome", String(16), nullable=False),
    Column("summary", Text, nullable=False, server_default=""),
    # What a job measured, as JSON, for later runs and reports (trends since the last report).
    Column("data", Text, nullable=True),
    Index("ix_job_runs_job_started_at", "job", "started_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("node", String(128), nullable=False, server_default=""),
    Column("user_id", BigInteger, nullable=True),
    Column("username", String(128), nullable=True),
    Column("chat_id", BigInteger, nullable=True),
    Column("command", String(64), nullable=False),
    Column("args", Text, nullable=False, server_default=""),
    # ok | error | denied | ignored | cancelled | expired | confirming
    Column("outcome", String(16), nullable=False),
    Column("duration_ms", Integer, nullable=False, server_default="0"),
    Column("detail", Text, nullable=False, server_default=""),
    Index("ix_audit_log_at", "at"),
)

# One row per alert key: its current state (the state machine of SPEC 4).
alert_states = Table(
    "alert_states",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("state", String(16), nullable=False),  # up | down
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("successes", Integer, nullable=False, server_default="0"),
    Column("changed_at", UtcDateTime, nullable=False),
    Column("last_message", Text, nullable=False, server_default=""),
    # The state the chat was last told (a flip held back by a silence, or the recovery of a down
    # nobody was told of, leaves it as it was), and whether a held-back flip waits for the end
    # of its silence to be looked at again.
    Column("announced", String(16), nullable=False, server_default="up"),
    Column("held", Boolean, nullable=False, server_default=false()),
    # When the last reminder that this key is still down was stored (NULL: none since it went).
    Column("reminded_at", UtcDateTime, nullable=True),
)

# Every transition of a key is a row; notifications are sent from these rows, never inline.
alert_flips = Table(
    "alert_flips",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("key", String(200), nullable=False),
    Column("old_state", String(16), nullable=False),
    Column("new_state", String(16), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("notified_at", UtcDateTime, nullable=True),
    # Recorded but not sent (the key was muted): the flip is kept, the notification is not.
    Column("suppressed", Boolean, nullable=False, server_default=false()),
    # flip | reminder | unsilenced | mirrored (core.alerts.store.FlipKind)
    Column("kind", String(16), nullable=False, server_default="flip"),
    # What held the notification back: "muted until …", "maintenance window …", "paused".
    Column("silenced_by", String(200), nullable=False, server_default=""),
    Index("ix_alert_flips_key_at", "key", "at"),
    Index("ix_alert_flips_notified_at", "notified_at"),
)

# /mute: a mute silences the keys its ``key`` pattern covers (core.alerts.policy.covers; every
# key when NULL) until ``until``, or until /unmute sets ``ended_at``. Maintenance windows are
# config, not rows.
mutes = Table(
    "mutes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("key", String(200), nullable=True),
    Column("until", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", BigInteger, nullable=True),
    Column("ended_at", UtcDateTime, nullable=True),
    Index("ix_mutes_until", "until"),
)

# Small shared state that must survive a restart and be seen by every node sharing the database:
# the failover state of each node, healer back-off per service, emergency mode. ``value`` is
# JSON; ``version`` grows by one on each write so a change can be claimed with a conditional
# update (``WHERE version = :seen``) across nodes.
node_state = Table(
    "node_state",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Messages for the alert chat that are not alert flips (a takeover, a digest, a job's report):
# stored first and sent by the notifier, so nothing is lost while Telegram is away.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("node", String(128), nullable=False, server_default=""),
    Column("text", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    Index("ix_outbox_sent_at", "sent_at"),
)

# -- claws on the Mac Mini fleet (SPEC 6) ------------------------------------------------------

# Orgs and their members (Telegram user ids), mirrored from [[orgs]] at start-up so every node
# and the proxy read one truth from the database.
orgs = Table(
    "orgs",
    metadata,
    Column("slug", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
)

org_members = Table(
    "org_members",
    metadata,
    Column("org", String(64), ForeignKey("orgs.slug", ondelete="CASCADE"), primary_key=True),
    Column("user_id", BigInteger, primary_key=True),
)

mac_minis = Table(
    "mac_minis",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("hostname", String(200), nullable=False, unique=True),
    Column("agent_url", String(500), nullable=False),
    # The agent's bearer token: the name of an env variable, or the value sealed (core.crypto).
    Column("agent_token_env", String(128), nullable=True),
    Column("agent_token_sealed", Text, nullable=True),
    Column("tunnel_suffix", String(200), nullable=True),
    Column("gateway_host", String(200), nullable=True),
    Column("port_low", Integer, nullable=False),
    Column("port_high", Integer, nullable=False),
    Column("capacity", Integer, nullable=False),
    # What the operator set: online | draining (| offline, set by hand or `minis add --offline`).
    Column("status", String(16), nullable=False),
    Column("last_seen", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    # What the claws_health job saw: the agent answers (after ``successes`` answers in a row) or
    # not (after ``failures`` misses in a row); the counts of the current run; its version.
    Column("reachable", Boolean, nullable=False, server_default=true()),
    Column("misses", Integer, nullable=False, server_default="0"),
    Column("hits", Integer, nullable=False, server_default="0"),
    Column("agent_version", String(64), nullable=True),
    Column("health_error", Text, nullable=False, server_default=""),
)

claws = Table(
    "claws",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org", String(64), nullable=False),
    Column("slug", String(64), nullable=False),
    # provisioning | active | error | deleting | deleted (kept with its bucket until purged)
    Column("status", String(16), nullable=False),
    Column("mini_id", Id, ForeignKey("mac_minis.id"), nullable=True),
    Column("mini_port", Integer, nullable=True),
    Column("tunnel_hostname", String(300), nullable=True),
    Column("gateway_token_sealed", Text, nullable=True),
    Column("bucket", String(100), nullable=True),
    # The provisioning steps done so far (JSON list), so a crash mid-way can be undone.
    Column("steps", Text, nullable=False, server_default="[]"),
    Column("error", Text, nullable=False, server_default=""),
    Column("created_by", BigInteger, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # The gateway as the claws_health job last saw it on its agent: running | starting |
    # restarting | stopped | handshake | missing; restarts counted by the agent; since when.
    Column("gateway_state", String(16), nullable=True),
    Column("gateway_restarts", Integer, nullable=False, server_default="0"),
    Column("gateway_error", Text, nullable=False, server_default=""),
    Column("gateway_since", UtcDateTime, nullable=True),
    Column("checked_at", UtcDateTime, nullable=True),
    # Soft delete: when it became ``deleted`` (purged ``claws.deleted_retention`` later).
    Column("deleted_at", UtcDateTime, nullable=True),
    # The newest backup made through clawops (key in the claw's bucket) and when.
    Column("backup_key", String(300), nullable=True),
    Column("backup_at", UtcDateTime, nullable=True),
    UniqueConstraint("org", "slug"),
    UniqueConstraint("mini_id", "mini_port"),
)

# -- web sign-in (SPEC 7) ----------------------------------------------------------------------
# Only SHA-256 hashes of the secrets are stored: a copy of the database signs nobody in.

# One-time login links answered by /web; ``used_at`` is claimed with a conditional update.
web_logins = Table(
    "web_logins",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", BigInteger, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
)

# Browser sessions made by redeeming a login link (the ``clawops_session`` cookie).
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("session_hash", String(64), nullable=False, unique=True),
    Column("user_id", BigInteger, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("user_agent", String(300), nullable=False, server_default=""),
    Index("ix_web_sessions_user_id", "user_id"),
)

# API tokens for scripts (``clawops tokens``): ``Authorization: Bearer <token>``.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", BigInteger, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("last_used", UtcDateTime, nullable=True),
    Index("ix_api_tokens_name", "name"),
)

# -- shared resources (SPEC 7b) ----------------------------------------------------------------
# One row per lease on a [[resources]] queue: waiting (in queue order, by id) or held. A row whose
# expires_at has passed counts for nothing (its holder stopped heartbeating); reclaim deletes it.
# ``lease`` is the random public id holders use, so a late heartbeat never hits someone else's.
leases = Table(
    "leases",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("lease", String(32), nullable=False, unique=True),
    Column("resource", String(64), nullable=False),
    Column("holder", String(128), nullable=False),
    Column("state", String(16), nullable=False),  # waiting | held
    Column("queued_at", UtcDateTime, nullable=False),
    Column("acquired_at", UtcDateTime, nullable=True),
    Column("heartbeat_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Index("ix_leases_resource_state", "resource", "state"),
)
