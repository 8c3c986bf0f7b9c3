"""Job commands: /jobs (schedule, next and last run) and /run JOB (SPEC 3)."""

from __future__ import annotations

from datetime import datetime

from bot.builtin import ago
from bot.commands import Command, Context, Reply, UsageError
from bot.format import esc
from core.tables import utcnow

OUTCOME_ICON = {"ok": "✅", "warning": "⚠️", "failed": "❌", "skipped": "⏭", "running": "⏳"}


def _until(when: datetime) -> str:
    seconds = int((when - utcnow()).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"in {seconds // size}{unit}"
    return f"in {max(seconds, 0)}s"


async def jobs_command(ctx: Context) -> Reply:
    node = ctx.node
    last = await node.runs.last_per_job()
    lines = [f"<b>Jobs on {esc(node.name)}</b>" + ("" if node.active else " (standby: idle)")]
    for info in node.jobs.describe():
        if not info.enabled:
            lines.append(f"⏸ <b>{esc(info.name)}</b> · disabled")
            continue
        nxt = _until(info.next_run) if info.next_run else "not scheduled"
        lines.append(f"<b>{esc(info.name)}</b> · {esc(info.schedule)} · next {nxt}")
        run = last.get(info.name)
        if info.running:
            lines.append("   ⏳ running now")
        elif run is not None:
            icon = OUTCOME_ICON.get(run.outcome, "•")
            lines.append(f"   {icon} {ago(run.started_at)}: {esc(run.summary[:120])}")
        else:
            lines.append("   never ran")
    return Reply("\n".join(lines))


def _job_name(ctx: Context) -> str:
    if len(ctx.inv.args) != 1:
        raise UsageError("give the name of one job (see /jobs)")
    return ctx.node.jobs.spec(ctx.inv.args[0]).name


async def run_check(ctx: Context) -> None:
    _job_name(ctx)


async def run_command(ctx: Context) -> Reply:
    name = _job_name(ctx)
    await ctx.progress(f"<b>{esc(name)}</b> started at {utcnow():%H:%M:%S} UTC")
    run, result = await ctx.node.jobs.run(name)
    icon = OUTCOME_ICON.get(result.outcome, "•")
    took = f" in {run.seconds:g} s" if run is not None and run.seconds is not None else ""
    return Reply(f"{icon} <b>{esc(name)}</b> {result.outcome}{took}\n{esc(result.summary)}")


JOB_COMMANDS = [
    Command("jobs", "Scheduled jobs: next run, last run and outcome", jobs_command),
    Command("run", "Run a job now", run_command, role="admin", mutates=True, usage="JOB",
            check=run_check),
]  # fmt: skip
