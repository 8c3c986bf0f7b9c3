"""Claw recovery: claws left in provisioning or deleting (a node died mid-way) are finished or
rolled back (SPEC 6). Runs soon after start and then every few minutes; with nothing stuck it
needs no key and does nothing."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from core.claws import Claws
from core.config import JobConfig
from core.tables import claws
from jobs.base import JobContext, JobResult

SETTINGS = JobConfig(every=timedelta(minutes=5), misfire_grace=timedelta(minutes=5))
STUCK = ("provisioning", "deleting", "error")


async def claw_recovery(ctx: JobContext) -> JobResult:
    async with ctx.db.connect() as conn:
        candidates = (await conn.execute(
            select(func.count()).select_from(claws).where(claws.c.status.in_(STUCK))
        )).scalar_one()  # fmt: skip
    if not candidates:
        return JobResult("ok", "nothing to recover")
    done = await Claws.from_config(ctx.db, ctx.config.claws).recover()
    if not done:
        return JobResult("ok", "nothing stale to recover")
    return JobResult("warning", "recovered: " + "; ".join(done), {"recovered": done})
