"""Status report: a short digest for the alert chat, covering what happened since the last one.

1. The period starts at the previous report's start (else 24 h ago).
2. Failed runs of every job in that period, grouped by job, with the last failure's summary.
3. Restarts made by the healer (its runs carry ``{"restarted": [...]}``).
4. Open alerts, missed check-ins (keys ``checkin:*``) apart.
5. Disk and swap per machine: the newest heartbeat's metrics against the snapshot the previous
   report showed (stored in that report's run data), else the first heartbeat of the period.

Everything that comes from outside (job names, summaries, alert messages) is HTML-escaped. It is
meant for a phone: long lists are cut to a few lines and "+N more".
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from html import escape
from typing import Any

from core.jobruns import JobRun
from core.tables import utcnow
from jobs.base import JobContext, JobResult

NAME = "status_report"
MAX_LINES = 6
SUMMARY_CHARS = 80


def _short(text: str, limit: int = SUMMARY_CHARS) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _cut(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LINES:
        return lines
    return [*lines[:MAX_LINES], f"  +{len(lines) - MAX_LINES} more"]


def failed_lines(runs: list[JobRun]) -> list[str]:
    failed = [r for r in runs if r.outcome == "failed" and r.job != NAME]
    counts = Counter(r.job for r in failed)
    last = {r.job: r for r in failed}  # runs are oldest first: the last one wins
    return _cut([
        f"  {escape(job)} ×{count}: {escape(_short(last[job].summary))}"
        for job, count in counts.most_common()
    ])  # fmt: skip


def _restarted_name(item: object) -> str:
    """``"gateway"``, or the healer's ``{"service": "gateway", "machine": "mini", ...}``."""
    if isinstance(item, dict):
        name = item.get("service", item.get("name"))
        machine = item.get("machine")
        if isinstance(name, str):
            return f"{name} on {machine}" if isinstance(machine, str) else name
    return str(item)


def restart_counts(runs: list[JobRun]) -> Counter[str]:
    """Services the healer restarted, and how often (its data is read defensively)."""
    counts: Counter[str] = Counter()
    for run in runs:
        restarted = (run.data or {}).get("restarted", [])
        if isinstance(restarted, list):
            counts.update(_restarted_name(item) for item in restarted)
    return counts


def _percent(metrics: Any, field: str) -> float | None:
    value = metrics.get(field) if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, int | float) else None


def trend_lines(newest: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    lines = []
    for name, metrics in sorted(newest.items()):
        parts = []
        for label, field in (("disk", "disk_percent"), ("swap", "swap_percent")):
            now = _percent(metrics, field)
            if now is None:
                continue
            before = _percent(baseline.get(name), field)
            if before is None or round(before) == round(now):
                parts.append(f"{label} {now:.0f}%")
            else:
                parts.append(f"{label} {before:.0f}% → {now:.0f}%")
        lines.append(f"  {escape(name)}: {', '.join(parts) if parts else 'no metrics'}")
    return lines


def _machines(run: JobRun | None) -> dict[str, Any]:
    machines = (run.data or {}).get("machines") if run is not None else None
    return machines if isinstance(machines, dict) else {}


async def status_report(ctx: JobContext) -> JobResult:
    now = utcnow()
    previous = await ctx.runs.last(NAME)
    since: datetime = previous.started_at if previous is not None else now - timedelta(hours=24)
    runs = await ctx.runs.since(since)
    newest_beat = await ctx.runs.last("heartbeat")
    baseline = (previous.data or {}).get("heartbeat") if previous is not None else None
    if not isinstance(baseline, dict) or not baseline:
        first_beat = next((r for r in runs if r.job == "heartbeat" and r.data), None)
        baseline = _machines(first_beat)
    newest = _machines(newest_beat)
    alerts = await ctx.alerts.open_alerts()
    missed = [a for a in alerts if a.key.startswith("checkin:")]
    others = [a for a in alerts if not a.key.startswith("checkin:")]

    failed = failed_lines(runs)
    restarted = restart_counts([r for r in runs if r.job == "healer"])
    restarts = _cut([f"  {escape(name)} ×{n}" for name, n in restarted.most_common()])
    parts = [f"<b>Status report</b> · {escape(ctx.node)} · since {since:%d %b %H:%M} UTC"]
    parts.append("❌ <b>failed runs</b>\n" + "\n".join(failed) if failed else "✅ no failed runs")
    if restarts:
        parts.append("🔁 <b>restarts</b>\n" + "\n".join(restarts))
    if missed:
        parts.append("⏰ <b>missed check-ins</b>\n" + "\n".join(_cut([
            f"  {escape(a.key.removeprefix('checkin:'))} since {a.changed_at:%d %b %H:%M}"
            for a in missed
        ])))  # fmt: skip
    if others:
        parts.append("🚨 <b>open alerts</b>\n" + "\n".join(_cut([
            f"  {escape(a.key)}: {escape(_short(a.last_message))}" for a in others
        ])))  # fmt: skip
    if newest:
        parts.append("📈 <b>disk · swap</b>\n" + "\n".join(trend_lines(newest, baseline)))
    await ctx.announce("\n\n".join(parts))
    failed_count = sum(1 for r in runs if r.outcome == "failed" and r.job != NAME)
    return JobResult(
        "ok",
        f"reported {failed_count} failed run(s), {restarted.total()} restart(s), "
        f"{len(alerts)} open alert(s) since {since:%Y-%m-%d %H:%M} UTC",
        {"since": since.isoformat(), "heartbeat": newest, "failed": failed_count,
         "open_alerts": len(alerts)},
    )  # fmt: skip
