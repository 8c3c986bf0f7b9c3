"""The record of scheduled job runs: one row per run (start, end, outcome, summary, data)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Row, func, insert, select, update

from core.db import Database
from core.tables import job_runs, utcnow

Outcome = Literal["running", "ok", "warning", "failed", "skipped"]
OUTCOMES = ("running", "ok", "warning", "failed", "skipped")


@dataclass(frozen=True)
class JobRun:
    id: int
    job: str
    node: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    summary: str
    data: dict[str, Any] | None

    @property
    def seconds(self) -> float | None:
        if self.ended_at is None:
            return None
        return round((self.ended_at - self.started_at).total_seconds(), 3)


def _run(row: Row[Any]) -> JobRun:
    data = json.loads(row.data) if row.data else None
    return JobRun(
        int(row.id), row.job, row.node, row.started_at, row.ended_at, row.outcome, row.summary,
        data if isinstance(data, dict) else None,
    )  # fmt: skip


class JobRuns:
    def __init__(self, db: Database, node: str) -> None:
        self.db = db
        self.node = node

    async def start(self, job: str, at: datetime | None = None) -> int:
        async with self.db.begin() as conn:
            run_id = (await conn.execute(
                insert(job_runs).returning(job_runs.c.id).values(
                    job=job, node=self.node, started_at=at or utcnow(), outcome="running"
                )
            )).scalar_one()  # fmt: skip
        return int(run_id)

    async def finish(
        self, run_id: int, outcome: Outcome, summary: str, data: dict[str, Any] | None = None
    ) -> None:
        if outcome not in OUTCOMES or outcome == "running":
            raise ValueError(f"a run ends ok, warning, failed or skipped, not {outcome!r}")
        async with self.db.begin() as conn:
            await conn.execute(
                update(job_runs).where(job_runs.c.id == run_id).values(
                    ended_at=utcnow(), outcome=outcome, summary=summary[:4000],
                    data=json.dumps(data, default=str) if data is not None else None,
                )
            )  # fmt: skip

    async def recent(self, job: str | None = None, limit: int = 20) -> list[JobRun]:
        """Newest first."""
        query = select(job_runs).order_by(job_runs.c.id.desc()).limit(limit)
        if job is not None:
            query = query.where(job_runs.c.job == job)
        async with self.db.connect() as conn:
            return [_run(r) for r in (await conn.execute(query)).all()]

    async def last(self, job: str, *, ended: bool = True) -> JobRun | None:
        query = select(job_runs).where(job_runs.c.job == job)
        if ended:
            query = query.where(job_runs.c.outcome != "running")
        query = query.order_by(job_runs.c.id.desc()).limit(1)
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        return _run(row) if row is not None else None

    async def last_per_job(self) -> dict[str, JobRun]:
        """The newest ended run of every job that has one."""
        newest = (
            select(func.max(job_runs.c.id))
            .where(job_runs.c.outcome != "running")
            .group_by(job_runs.c.job)
            .scalar_subquery()
        )
        query = select(job_runs).where(job_runs.c.id.in_(newest))
        async with self.db.connect() as conn:
            return {r.job: _run(r) for r in (await conn.execute(query)).all()}

    async def since(self, at: datetime, job: str | None = None) -> list[JobRun]:
        """Every ended run started at or after ``at``, oldest first."""
        query = (
            select(job_runs)
            .where(job_runs.c.started_at >= at, job_runs.c.outcome != "running")
            .order_by(job_runs.c.id)
        )
        if job is not None:
            query = query.where(job_runs.c.job == job)
        async with self.db.connect() as conn:
            return [_run(r) for r in (await conn.execute(query)).all()]
