"""System cleanup: the operator's cleanup tasks, each on its machine (SPEC 4, every 15 min).

Machines run concurrently; a machine's tasks run one after another, in config order (they often
touch the same files). A task that exits non-zero, times out or cannot be started fails the run;
the summary says, per machine, how many tasks passed and which did not. A task on a machine
without SSH from this node (which check-config refuses) is skipped with that note, not failed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from core.config._jobs import CleanupTask
from core.errors import ClawopsError, NoSSH
from jobs.base import JobContext, JobResult


async def run_task(ctx: JobContext, task: CleanupTask) -> dict[str, Any]:
    entry: dict[str, Any] = {"machine": task.machine, "argv": task.argv}
    try:
        result = await ctx.fleet.executor(task.machine).run(
            task.argv, timeout=task.timeout.total_seconds()
        )
    except NoSSH as exc:
        return {**entry, "ok": True, "exit": None, "error": "", "skipped": str(exc)}
    except ClawopsError as exc:
        return {**entry, "ok": False, "exit": None, "error": str(exc)}
    error = ""
    if result.timed_out:
        error = f"timed out after {task.timeout.total_seconds():g} s"
    elif not result.ok:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        error = f"exit {result.exit_status} {tail[0]}".strip()
    return {**entry, "ok": not error, "exit": result.exit_status, "error": error,
            "seconds": round(result.duration, 2), "output": result.stdout[-500:]}  # fmt: skip


async def run_machine(ctx: JobContext, tasks: list[CleanupTask]) -> list[dict[str, Any]]:
    return [await run_task(ctx, task) for task in tasks]


async def system_cleanup(ctx: JobContext) -> JobResult:
    by_machine: dict[str, list[CleanupTask]] = {}
    for task in ctx.config.jobs.system_cleanup.tasks:
        by_machine.setdefault(task.machine, []).append(task)
    if not by_machine:
        return JobResult("ok", "no cleanup tasks configured", {"machines": {}})
    results = await asyncio.gather(*(run_machine(ctx, t) for t in by_machine.values()))
    machines = dict(zip(by_machine, results, strict=True))
    lines = []
    for name, done in machines.items():
        if all(d.get("skipped") for d in done):
            lines.append(f"{name}: skipped (no SSH)")
            continue
        passed = sum(1 for d in done if d["ok"])
        failed = [f"{d['argv'][0]}: {d['error']}" for d in done if not d["ok"]]
        lines.append(
            f"{name}: {passed}/{len(done)} ok" + (f" ({'; '.join(failed)})" if failed else "")
        )
    failed_any = any(not d["ok"] for done in results for d in done)
    return JobResult("failed" if failed_any else "ok", "; ".join(lines), {"machines": machines})
