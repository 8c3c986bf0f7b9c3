"""Claws purge: the buckets and rows of claws deleted ``claws.deleted_retention`` ago are
deleted for good (issue 14), and the alert chat is told in one message naming them. A bucket
that cannot be deleted keeps its row for the next run, and the message and result say so."""

from __future__ import annotations

from html import escape

from core.claws import Claws
from jobs.base import JobContext, JobResult


async def claws_purge(ctx: JobContext) -> JobResult:
    service = Claws.from_config(ctx.db, ctx.config.claws)
    done = await service.purge()
    if not done:
        return JobResult("ok", "nothing past the retention")
    gone = [p.name for p in done if not p.error]
    kept = {p.name: p.error for p in done if p.error}
    lines = []
    if gone:
        lines.append(
            f"🧹 Purged {len(gone)} deleted claw(s) (buckets and backups): "
            + ", ".join(f"<b>{escape(n)}</b>" for n in gone)
        )
    if kept:
        lines.append(
            "⚠️ Not purged, tried again next run: "
            + "; ".join(f"<b>{escape(n)}</b> ({escape(e[:200])})" for n, e in kept.items())
        )
    await ctx.announce("\n".join(lines))
    data = {"purged": gone, "failed": kept}
    if kept:
        return JobResult(
            "warning",
            f"purged {len(gone)}; not purged: " + "; ".join(f"{n} ({e})" for n, e in kept.items()),
            data,
        )
    return JobResult("ok", "purged " + ", ".join(gone), data)
