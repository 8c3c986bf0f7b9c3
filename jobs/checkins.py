"""Check-in monitor: jobs that report to POST /api/log and stop reporting are alerted once.

What state a check-in is in is decided in ``core.checkins`` (the Healthchecks model: new, up,
late, down, degraded, paused); this job feeds the timing to the alert key ``checkin:<job_id>``:
past the expected time plus the grace it goes down (once: ``observe`` flips only on
transitions), and it recovers with the next entry. A paused check-in is not observed at all.

The latest entry's status is reflected in the reported state (``critical`` → ``down``,
``warning`` → ``degraded``), but it is alerted under ``job:<jobId>`` by the sidecar, not here:
this key is about entries that do not come at all.
"""

from __future__ import annotations

from datetime import datetime

from core.checkins import STATES, Checkins, CheckinStatus, schedule_text, state_key
from core.tables import utcnow
from jobs.base import JobContext, JobResult


def checkins_of(ctx: JobContext) -> Checkins:
    return Checkins(ctx.config.checkins, ctx.state, ctx.statuslog, ctx.alerts)


async def check(ctx: JobContext, status: CheckinStatus, now: datetime) -> None:
    """Feed the check-in's timing to its alert key (nothing while it is paused, new or late)."""
    key = state_key(status.checkin)
    flip = None
    if status.timing == "down":
        if status.last_ping is not None:
            last = f"nothing since {status.last_ping:%Y-%m-%d %H:%M} UTC"
        else:
            last = "never seen"
        message = f"missed check-in: {last} ({schedule_text(status.checkin)})"
        flip = await ctx.alerts.observe(key, "critical", message, now)
    elif status.timing == "up" and status.last_ping is not None:
        received = f"check-in received at {status.last_ping:%H:%M:%S} UTC"
        flip = await ctx.alerts.observe(key, "ok", received, now)
    if flip is not None:
        ctx.wake_notifier()


async def checkin_monitor(ctx: JobContext) -> JobResult:
    now = utcnow()
    checkins = checkins_of(ctx)
    states: dict[str, str] = {}
    for status in await checkins.statuses(now):
        await check(ctx, status, now)
        states[status.job_id] = status.state
    if not states:
        return JobResult("ok", "no check-ins configured", {})
    groups = [(s, sorted(j for j, v in states.items() if v == s)) for s in STATES]
    summary = "; ".join(f"{s}: {', '.join(jobs)}" for s, jobs in groups if jobs)
    return JobResult("ok", summary, states)
