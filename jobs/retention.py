"""Retention: settled history past its TTL is deleted, table by table, in small batches.

Each batch is read (``SELECT id ... WHERE rule ORDER BY id LIMIT n``), then deleted in its own
short transaction (``DELETE ... WHERE id IN (...) AND rule``), with a yield to the event loop
between batches, so a purge of a million rows never holds a lock or the loop for long. Every
database call is bounded by ``[database] timeout``: a silent database fails the run, it does
not hang it; the batches already committed stay purged and the next run goes on from there.

What is purged, and what never is (``rules``):

- ``status_log`` and ``audit_log``: rows older than their TTL.
- ``job_runs``: runs that ended before the cutoff, except the newest ended run of each job
  (``/jobs`` shows it; the status report reads its own previous run and the newest heartbeat).
  A running row is never touched. A report after a gap longer than the TTL covers only what is
  left.
- ``alert_flips``: flips notified (or stored settled) before the cutoff. Never an unsent flip
  (the notifier sends from the rows); never the flips of a key that is down now, from its going
  down on (the peer mirror reads them to tell whether the chat was told); never the newest
  suppressed flip of a held key (the end of the silence names what held it). An alert's buttons
  on a purged flip answer "no longer known".
- ``outbox``: messages sent before the cutoff; never an unsent one.
- ``web_logins``: links expired or used before the cutoff; ``web_sessions``: sessions expired or
  revoked before the cutoff. ``api_tokens`` are never purged: a revoked token stays listed by
  ``clawops tokens`` (the record of who had access).
- ``leases``: rows whose ``expires_at`` passed more than the TTL ago. A release deletes its row
  and the healer's ``reclaim_expired`` deletes the expired ones, so this only catches what a
  disabled healer leaves; a live lease (held or waiting) is never touched.
- ``mutes``: mutes over (``until`` passed, or ended by /unmute) before the cutoff; /mutes and
  the silences read only active ones.

Not history, so not here: ``alert_states`` and ``node_state`` hold one row per key (alert keys and
state names come from the config and the fleet); ``orgs``, ``org_members``, ``mac_minis`` are the
inventory; ``claws`` rows are purged with their buckets by ``claws_purge``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy import ColumnElement, Table, and_, delete, func, or_, select

from core.config._jobs import RetentionJob
from core.db import Database
from core.tables import (
    alert_flips,
    alert_states,
    audit_log,
    job_runs,
    leases,
    mutes,
    outbox,
    status_log,
    utcnow,
    web_logins,
    web_sessions,
)
from jobs.base import JobContext, JobResult

Rule = tuple[Table, ColumnElement[bool]]


async def purge(db: Database, table: Table, where: ColumnElement[bool], batch: int) -> int:
    """Delete the rows of ``table`` matching ``where``, ``batch`` at a time; the number deleted.

    1. Read the ids of the next batch (a read: no write lock, nothing to commit when none).
    2. Delete those ids in a short write transaction, ``where`` checked again, so a row that
       stopped matching in between (a flip whose key went down) is left alone.
    3. Yield to the event loop; stop after a batch shorter than ``batch``."""
    total = 0
    while True:
        query = select(table.c.id).where(where).order_by(table.c.id).limit(batch)
        async with db.connect() as conn:
            ids = list((await conn.execute(query)).scalars())
        if not ids:
            return total
        async with db.begin() as conn:
            done = await conn.execute(delete(table).where(table.c.id.in_(ids), where))
        total += done.rowcount
        if len(ids) < batch:
            return total
        await asyncio.sleep(0)


def _ended_runs(cutoff: datetime) -> ColumnElement[bool]:
    newest = job_runs.alias("newest")
    kept = (
        select(func.max(newest.c.id))
        .where(newest.c.ended_at.is_not(None), newest.c.outcome != "running")
        .group_by(newest.c.job)
    )
    return and_(
        job_runs.c.ended_at < cutoff,
        job_runs.c.outcome != "running",
        job_runs.c.id.not_in(kept),
    )


def _settled_flips(cutoff: datetime) -> ColumnElement[bool]:
    # From the newest going-down flip of each key that is down now, every flip is kept.
    went = alert_flips.alias("went_down")
    since = (
        select(went.c.key, func.max(went.c.id).label("first"))
        .join(alert_states, alert_states.c.key == went.c.key)
        .where(alert_states.c.state == "down", went.c.new_state == "down")
        .where(went.c.old_state != "down")
        .group_by(went.c.key)
        .subquery("since")
    )
    later = alert_flips.alias("later")
    of_down = select(later.c.id).join(
        since, and_(later.c.key == since.c.key, later.c.id >= since.c.first)
    )
    held = alert_flips.alias("held")
    of_held = (
        select(func.max(held.c.id))
        .join(alert_states, alert_states.c.key == held.c.key)
        .where(alert_states.c.held.is_(True), held.c.suppressed.is_(True))
        .group_by(held.c.key)
    )
    return and_(
        alert_flips.c.notified_at.is_not(None),
        alert_flips.c.notified_at < cutoff,
        alert_flips.c.at < cutoff,
        alert_flips.c.id.not_in(of_down),
        alert_flips.c.id.not_in(of_held),
    )


def rules(settings: RetentionJob, now: datetime) -> dict[str, Rule]:
    """Per table name: the table and which of its rows are past retention at ``now``."""
    web = now - settings.web_ttl
    over = now - settings.mutes_ttl
    return {
        "status_log": (status_log, status_log.c.created_at < now - settings.status_log_ttl),
        "audit_log": (audit_log, audit_log.c.at < now - settings.audit_ttl),
        "job_runs": (job_runs, _ended_runs(now - settings.job_runs_ttl)),
        "alert_flips": (alert_flips, _settled_flips(now - settings.alert_flips_ttl)),
        "outbox": (outbox, outbox.c.sent_at < now - settings.outbox_ttl),
        "web_logins": (web_logins, or_(web_logins.c.expires_at < web, web_logins.c.used_at < web)),
        "web_sessions": (
            web_sessions,
            or_(web_sessions.c.expires_at < web, web_sessions.c.revoked_at < web),
        ),
        "leases": (leases, leases.c.expires_at < now - settings.leases_ttl),
        "mutes": (mutes, or_(mutes.c.until < over, mutes.c.ended_at < over)),
    }


async def purge_all(
    db: Database, settings: RetentionJob, now: datetime | None = None
) -> dict[str, int]:
    """Purge every table by its rule at ``now`` (default: the clock); rows deleted per table."""
    counts = {}
    for name, (table, where) in rules(settings, now or utcnow()).items():
        counts[name] = await purge(db, table, where, settings.batch_size)
    return counts


def summary(counts: dict[str, int]) -> str:
    done = [f"{n} {name}" for name, n in counts.items() if n]
    return "purged " + ", ".join(done) + " row(s)" if done else "nothing past retention"


async def retention(ctx: JobContext) -> JobResult:
    counts = await purge_all(ctx.db, ctx.config.jobs.retention)
    return JobResult("ok", summary(counts), dict(counts))
