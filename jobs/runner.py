"""Schedules the jobs on APScheduler and records every run.

Every job is added with ``coalesce=True``, ``max_instances=1`` and its ``misfire_grace``: a Mac
that slept through three runs runs the job once on wake, not three times. A job marked
``active_only`` runs only while this node is the active one (SPEC 4), so a primary and a standby
sharing a database never both run it. A run started by hand (/run) and a scheduled run of the
same job never overlap either: the second is refused ("already running").

Each run is a row in ``job_runs`` (start, end, outcome, summary, data). Its outcome is also an
observation of the alert key ``run:<job>``: a failed run alerts (once, until a run succeeds); a
run ending in ``warning`` alerts only when it repeats, like a warning in the status log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from core.alerts import Observation
from core.config import JobConfig
from core.durations import format_duration
from core.errors import ClawopsError, InputError
from core.jobruns import JobRun
from jobs.base import JobContext, JobResult, JobSpec

log = logging.getLogger("clawops.jobs")
OBSERVATION: dict[str, Observation] = {"ok": "ok", "warning": "warning", "failed": "critical"}


def trigger_for(settings: JobConfig) -> BaseTrigger:
    timezone = settings.timezone or "UTC"
    if settings.cron is not None:
        return CronTrigger.from_crontab(settings.cron, timezone=timezone)
    assert settings.every is not None  # the config allows exactly one of them
    return IntervalTrigger(seconds=settings.every.total_seconds(), timezone=timezone)


def schedule_text(settings: JobConfig) -> str:
    if settings.cron is not None:
        return f"cron {settings.cron}" + (f" {settings.timezone}" if settings.timezone else "")
    assert settings.every is not None
    return f"every {format_duration(settings.every)}"


@dataclass(frozen=True)
class JobChanges:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobInfo:
    name: str
    description: str
    schedule: str
    enabled: bool
    active_only: bool
    next_run: datetime | None
    running: bool


class JobRunner:
    def __init__(self, ctx: JobContext, scheduler: AsyncIOScheduler) -> None:
        self.ctx = ctx
        self.scheduler = scheduler
        self.specs: dict[str, JobSpec] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def add(self, spec: JobSpec) -> None:
        if spec.name in self.specs:
            raise ValueError(f"job {spec.name!r} is defined twice")
        self.specs[spec.name] = spec
        self._locks[spec.name] = asyncio.Lock()
        self._schedule(spec)

    def _schedule(self, spec: JobSpec) -> None:
        if not spec.settings.enabled:
            if self.scheduler.get_job(spec.name) is not None:
                self.scheduler.remove_job(spec.name)
            return
        self.scheduler.add_job(
            self._scheduled,
            trigger_for(spec.settings),
            args=[spec.name],
            id=spec.name,
            name=spec.name,
            coalesce=True,
            max_instances=1,
            replace_existing=True,
            misfire_grace_time=max(1, int(spec.settings.misfire_grace.total_seconds())),
        )

    def reconfigure(self, specs: Iterable[JobSpec]) -> JobChanges:
        """Take the jobs of a reloaded config: new ones are scheduled, removed ones unscheduled,
        and only a job whose settings changed is rescheduled (the others keep their next run).
        A run in progress finishes; the next one follows the new settings."""
        wanted = {spec.name: spec for spec in specs}
        removed = sorted(self.specs.keys() - wanted.keys())
        for name in removed:
            if self.scheduler.get_job(name) is not None:
                self.scheduler.remove_job(name)
            del self.specs[name]
            del self._locks[name]
        added, changed = [], []
        for name, spec in wanted.items():
            current = self.specs.get(name)
            if current is None:
                self.add(spec)
                added.append(name)
            elif current.settings != spec.settings or current.description != spec.description:
                self.specs[name] = spec
                self._schedule(spec)
                changed.append(name)
        return JobChanges(tuple(added), tuple(removed), tuple(changed))

    def run_soon(self, name: str, delay: float) -> None:
        """Move the next scheduled run of ``name`` to ``delay`` seconds from now."""
        if self.scheduler.get_job(name) is not None:
            when = datetime.now(UTC) + timedelta(seconds=delay)
            self.scheduler.modify_job(name, next_run_time=when)

    def spec(self, name: str) -> JobSpec:
        spec = self.specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self.specs)) or "none"
            raise InputError(f"no job {name!r}; jobs: {known}")
        return spec

    async def _scheduled(self, name: str) -> None:
        spec = self.specs.get(name)
        if spec is None:  # removed by a reload as this run was due
            return
        if spec.settings.active_only and not self.ctx.is_active():
            log.debug("job %s: skipped, this node is not the active one", name)
            return
        if self._locks[name].locked():
            log.info("job %s: previous run still going; this one is skipped", name)
            return
        await self.run(name)

    async def run(self, name: str) -> tuple[JobRun | None, JobResult]:
        """Run ``name`` now and record it; refused while a run of it is going."""
        spec = self.spec(name)
        lock = self._locks[name]
        if lock.locked():
            raise InputError(f"{name} is already running")
        async with lock:
            run_id = await self.ctx.runs.start(name)
            try:
                result = await self._call(spec)
            except asyncio.CancelledError:
                # The node is stopping: the run is recorded as interrupted, not left "running".
                await asyncio.shield(self.ctx.runs.finish(
                    run_id, "failed", "interrupted: the node stopped during the run"
                ))  # fmt: skip
                raise
            await self.ctx.runs.finish(run_id, result.outcome, result.summary, result.data)
            log.info("job %s: %s: %s", name, result.outcome, result.summary[:200])
            if result.alert:
                flip = await self.ctx.alerts.observe(
                    f"run:{name}", OBSERVATION[result.outcome], result.summary or result.outcome
                )
                if flip is not None:
                    self.ctx.wake_notifier()
            return await self.ctx.runs.last(name), result

    async def _call(self, spec: JobSpec) -> JobResult:
        try:
            return await spec.func(self.ctx)
        except ClawopsError as exc:
            return JobResult("failed", str(exc))
        except Exception as exc:  # a bug in one job must not stop the scheduler: record it
            log.exception("job %s crashed", spec.name)
            return JobResult("failed", f"internal error: {type(exc).__name__}: {exc}")

    def describe(self) -> list[JobInfo]:
        infos = []
        for name, spec in sorted(self.specs.items()):
            job = self.scheduler.get_job(name) if spec.settings.enabled else None
            next_run = getattr(job, "next_run_time", None) if job is not None else None
            infos.append(JobInfo(
                name, spec.description, schedule_text(spec.settings), spec.settings.enabled,
                spec.settings.active_only, next_run, self._locks[name].locked(),
            ))  # fmt: skip
        return infos
