"""Check-in monitor: jobs that report to POST /api/log and stop reporting are alerted once.

The Healthchecks model. Each ``[[checkins]]`` job is expected ``period`` after its last entry
(or at the first ``cron`` fire time after it) and may be ``grace`` late:

- ``new``: never seen; not alerted until it is overdue counting from when this monitor first
  saw the check-in configured (stored in the shared state under ``checkin:<job_id>``, so a
  restart or a second node does not start the wait over);
- ``up``: the last entry came in time; ``late``: past the expected time, within the grace;
- ``down``: past the expected time plus the grace — the alert key ``checkin:<job_id>`` goes
  down (once: ``observe`` flips only on transitions) and recovers with the next entry.

The latest entry's status is reflected in the reported state (``critical`` → ``down``,
``warning`` → ``degraded``), but it is alerted under ``job:<jobId>`` by the sidecar, not here:
this key is about entries that do not come at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

from core.config import CheckinConfig
from core.durations import format_duration
from core.tables import utcnow
from jobs.base import JobContext, JobResult


@dataclass(frozen=True)
class _Seen:
    at: datetime
    status: str | None  # None: never reported; `at` is when it was first monitored


def state_key(checkin: CheckinConfig) -> str:
    return f"checkin:{checkin.job_id}"


def expected_after(checkin: CheckinConfig, since: datetime) -> datetime:
    """When the next entry is due, given the last one (or the first sight) at ``since``."""
    if checkin.period is not None:
        return since + checkin.period
    assert checkin.cron is not None  # the config allows exactly one of them
    trigger = CronTrigger.from_crontab(checkin.cron, timezone=checkin.timezone or "UTC")
    # The first fire strictly after `since` (cron fires are whole seconds).
    due = trigger.get_next_fire_time(None, since + timedelta(microseconds=1))
    return due if due is not None else datetime.max.replace(tzinfo=since.tzinfo)


def schedule_text(checkin: CheckinConfig) -> str:
    every = (
        format_duration(checkin.period) if checkin.period is not None else f"cron {checkin.cron}"
    )
    return f"period {every}, grace {format_duration(checkin.grace)}"


async def last_seen(ctx: JobContext, checkin: CheckinConfig, now: datetime) -> _Seen:
    """The check-in's newest entry, else what the shared state remembers of it.

    The state (``checkin:<job_id>``) keeps when a node first monitored the check-in and when
    and how it last reported, so neither a restart nor retention purging a weekly job's only
    entry makes a missed check-in look new again.
    """
    key = state_key(checkin)
    latest = await ctx.statuslog.recent(job_id=checkin.job_id, limit=1)
    for _ in range(3):
        stored = await ctx.state.read(key)
        value = stored.value if stored is not None else {}
        if latest:
            entry = latest[0]
            at = entry.created_at
            if value.get("last_seen") != at.isoformat():
                seen = {**value, "last_seen": at.isoformat(), "last_status": entry.status}
                if not await ctx.state.claim(key, seen, stored.version if stored else None):
                    continue  # another node wrote it first: read again
            return _Seen(at, entry.status)
        if isinstance(value.get("last_seen"), str):
            remembered = value.get("last_status")
            return _Seen(
                datetime.fromisoformat(value["last_seen"]),
                remembered if isinstance(remembered, str) else "ok",
            )
        if isinstance(value.get("first_seen"), str):
            return _Seen(datetime.fromisoformat(value["first_seen"]), None)
        if await ctx.state.claim(key, {"first_seen": now.isoformat()}, None):
            return _Seen(now, None)
    return _Seen(now, None)


async def check(ctx: JobContext, checkin: CheckinConfig, now: datetime) -> str:
    """The check-in's state now, fed to its alert key; 'new', 'up', 'late', 'down', ..."""
    key = state_key(checkin)
    seen = await last_seen(ctx, checkin, now)
    ever = seen.status is not None
    due = expected_after(checkin, seen.at)
    if now <= due:
        timing = "up" if ever else "new"
    elif now <= due + checkin.grace:
        timing = "late" if ever else "new"
    else:
        timing = "down"
    flip = None
    if timing == "down":
        last = f"nothing since {seen.at:%Y-%m-%d %H:%M} UTC" if ever else "never seen"
        message = f"missed check-in: {last} ({schedule_text(checkin)})"
        flip = await ctx.alerts.observe(key, "critical", message, now)
    elif timing == "up":
        received = f"check-in received at {seen.at:%H:%M:%S} UTC"
        flip = await ctx.alerts.observe(key, "ok", received, now)
    if flip is not None:
        ctx.wake_notifier()
    if timing in ("up", "late") and seen.status == "critical":
        return "down"
    if timing in ("up", "late") and seen.status == "warning":
        return "degraded"
    return timing


async def checkin_monitor(ctx: JobContext) -> JobResult:
    now = utcnow()
    states = {c.job_id: await check(ctx, c, now) for c in ctx.config.checkins}
    if not states:
        return JobResult("ok", "no check-ins configured", {})
    order = ("down", "late", "degraded", "new", "up")
    groups = [(s, sorted(j for j, v in states.items() if v == s)) for s in order]
    summary = "; ".join(f"{s}: {', '.join(jobs)}" for s, jobs in groups if jobs)
    return JobResult("ok", summary, states)
