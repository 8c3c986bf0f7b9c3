"""Retention: status-log and audit rows past their TTL are deleted, in small batches.

Each batch is its own short transaction (``DELETE ... WHERE id IN (SELECT id ... LIMIT n)``,
which both SQLite and PostgreSQL run), with a yield to the event loop between batches, so a
purge of a million rows never holds a lock or the loop for long.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import Table, delete, select

from core.db import Database
from core.tables import audit_log, status_log, utcnow
from jobs.base import JobContext, JobResult


async def purge(db: Database, table: Table, column: str, ttl: timedelta, batch: int) -> int:
    """Delete rows of ``table`` whose ``column`` is older than ``ttl``; the number deleted."""
    cutoff = utcnow() - ttl
    when = table.c[column]
    total = 0
    while True:
        ids = select(table.c.id).where(when < cutoff).order_by(table.c.id).limit(batch)
        async with db.begin() as conn:
            deleted = (await conn.execute(delete(table).where(table.c.id.in_(ids)))).rowcount
        total += deleted
        if deleted < batch:
            return total
        await asyncio.sleep(0)


async def retention(ctx: JobContext) -> JobResult:
    settings = ctx.config.jobs.retention
    logs = await purge(
        ctx.db, status_log, "created_at", settings.status_log_ttl, settings.batch_size
    )
    audits = await purge(ctx.db, audit_log, "at", settings.audit_ttl, settings.batch_size)
    return JobResult(
        "ok",
        f"purged {logs} status-log and {audits} audit row(s)",
        {"status_log": logs, "audit_log": audits},
    )
