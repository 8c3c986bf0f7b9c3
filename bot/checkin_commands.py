"""Check-in commands: /checkins (every check-in's state and last ping), /pause and /resume."""

from __future__ import annotations

from datetime import datetime

from bot.commands import Command, Context, Reply, UsageError
from bot.format import esc
from core.checkins import CheckinStatus, schedule_text
from core.durations import format_duration
from core.errors import Conflict
from core.tables import utcnow

ICON = {"new": "🆕", "up": "🟢", "late": "🟡", "down": "🔴", "degraded": "🟠", "paused": "⏸"}


def span(seconds: float) -> str:
    """A duration in its two largest units: ``2h 5m``, ``3d``, ``45s``."""
    left = max(int(seconds), 0)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, left = divmod(left, size)
        if count and len(parts) < 2:
            parts.append(f"{count}{unit}")
        elif parts:
            break  # "2h 5m" or "2h", never "2h 0m 5s"
    return " ".join(parts) or "0s"


def _ago(when: datetime | None, now: datetime) -> str:
    return "never" if when is None else f"{span((now - when).total_seconds())} ago"


def _due(status: CheckinStatus, now: datetime) -> str:
    if status.due is None:
        return ""
    if status.due >= now:
        return f"due in {span((status.due - now).total_seconds())}"
    return f"overdue {span((now - status.due).total_seconds())}"


def _line(status: CheckinStatus, now: datetime) -> str:
    parts = [
        f"{ICON[status.state]} <b>{esc(status.job_id)}</b> · {status.state}",
        f"last ping {_ago(status.last_ping, now)}",
    ]
    if status.pause is not None:
        pause = status.pause
        parts.append(f"paused by {esc(pause.who)} since {pause.at:%Y-%m-%d %H:%M} UTC")
    else:
        parts.append(_due(status, now))
    line = " · ".join(parts)
    return f"{line}\n   {esc(schedule_text(status.checkin))}"


async def checkins_command(ctx: Context) -> Reply:
    now = utcnow()
    statuses = await ctx.node.checkins.statuses(now)
    if not statuses:
        return Reply("No check-ins configured (<code>[[checkins]]</code> in the config).")
    lines = [f"<b>Check-ins</b> ({len(statuses)})"]
    lines.extend(_line(s, now) for s in sorted(statuses, key=lambda s: s.job_id))
    return Reply("\n".join(lines))


def _job_id(ctx: Context) -> str:
    if len(ctx.inv.args) != 1:
        raise UsageError("give the name of one check-in (see /checkins)")
    return ctx.node.checkins.get(ctx.inv.args[0]).job_id


async def pause_check(ctx: Context) -> None:
    status = await ctx.node.checkins.status(_job_id(ctx))
    if status.pause is not None:
        raise Conflict(f"check-in {status.job_id} is already paused (by {status.pause.who})")


async def resume_check(ctx: Context) -> None:
    status = await ctx.node.checkins.status(_job_id(ctx))
    if status.pause is None:
        raise Conflict(f"check-in {status.job_id} is not paused")


async def pause_command(ctx: Context) -> Reply:
    inv = ctx.inv
    status = await ctx.node.checkins.pause(_job_id(ctx), inv.user_id, name=inv.username)
    name = esc(status.job_id)
    return Reply(
        f"⏸ Paused check-in <b>{name}</b>: it is never late and its alerts are held "
        f"until <code>/resume {name}</code>."
    )


async def resume_command(ctx: Context) -> Reply:
    inv = ctx.inv
    status = await ctx.node.checkins.resume(_job_id(ctx), inv.user_id, name=inv.username)
    assert status.due is not None  # not paused any more
    wait = span((status.due - status.since).total_seconds())  # `since` is the resume
    return Reply(
        f"▶️ Resumed check-in <b>{esc(status.job_id)}</b>: the wait starts over now; next due "
        f"at {status.due:%Y-%m-%d %H:%M:%S} UTC (in {wait}), "
        f"down after a further {format_duration(status.checkin.grace)}."
    )


CHECKIN_COMMANDS = [
    Command("checkins", "Check-ins: state, last ping, schedule", checkins_command),
    Command(
        "pause",
        "Pause a check-in (never late, no alerts)",
        pause_command,
        role="admin",
        mutates=True,
        usage="CHECK",
        check=pause_check,
    ),
    Command(
        "resume",
        "Resume a paused check-in",
        resume_command,
        role="admin",
        mutates=True,
        usage="CHECK",
        check=resume_check,
    ),
]
