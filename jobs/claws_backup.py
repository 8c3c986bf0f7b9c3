"""Claws backup: every active claw backed up into its bucket by its agent, keeping the newest
``claws.backups_keep`` (issue 14). One claw failing does not stop the others; the result names
those that failed (``warning`` when some failed, ``failed`` when all did), so the job's failure
alert says which. No claws: nothing to do."""

from __future__ import annotations

from core.claws import Claws
from core.errors import ClawopsError
from jobs.base import Ending, JobContext, JobResult


async def claws_backup(ctx: JobContext) -> JobResult:
    service = Claws.from_config(
        ctx.db, ctx.config.claws, backup_timeout=ctx.config.jobs.claws_backup.timeout
    )
    due = [c for c in await service.list() if c.status == "active" and c.bucket]
    if not due:
        return JobResult("ok", "no active claws to back up")
    done: list[str] = []
    failed: dict[str, str] = {}
    for claw in due:
        name = f"{claw.org}/{claw.slug}"
        try:
            info = await service.backup(claw.org, claw.slug)
        except ClawopsError as exc:  # the claw changed meanwhile, its agent or store failed
            failed[name] = str(exc)
            continue
        done.append(f"{name}: {info.key} ({info.size} B, {info.method})")
    data = {"backed_up": done, "failed": failed}
    if not failed:
        return JobResult("ok", f"backed up {len(done)} claw(s)", data)
    outcome: Ending = "failed" if not done else "warning"
    names = ", ".join(sorted(failed))
    summary = f"{len(failed)} of {len(due)} claw backup(s) failed: {names}"
    return JobResult(outcome, summary + "; " + "; ".join(failed.values()), data)
