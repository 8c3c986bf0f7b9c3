"""Scheduled commands (``[[jobs.commands]]``): the crontab's replacement (SPEC 4).

The argv is written by the operator in the config and run without a shell on its machine, with
its timeout; nothing typed in chat ever becomes part of it. It inherits the node's environment
without its secrets, except the variables the job lists in ``env``. Each run keeps its exit
status and the tail of its output (in the run's data), and a failure alerts unless
``alert_on_failure`` is off.
"""

from __future__ import annotations

from core.config import CommandJob
from jobs.base import JobContext, JobFunc, JobResult, JobSpec

TAIL = 2000  # characters of stdout and stderr kept per run


def _tail(text: str) -> str:
    return text[-TAIL:]


def command_job(job: CommandJob) -> JobFunc:
    async def run(ctx: JobContext) -> JobResult:
        executor = ctx.fleet.executor(job.machine)
        result = await executor.run(
            job.argv, timeout=job.timeout.total_seconds(), allow_env=job.env
        )
        data = {
            "machine": job.machine, "argv": job.argv, "exit": result.exit_status,
            "seconds": round(result.duration, 3), "stdout": _tail(result.stdout),
            "stderr": _tail(result.stderr),
        }  # fmt: skip
        if result.timed_out:
            summary = f"timed out after {job.timeout.total_seconds():g} s on {job.machine}"
            return JobResult("failed", summary, data, alert=job.alert_on_failure)
        if not result.ok:
            last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
            summary = f"exit {result.exit_status} on {job.machine}: {last[0][:300]}"
            return JobResult("failed", summary, data, alert=job.alert_on_failure)
        lines = result.stdout.strip().splitlines()
        summary = f"ok on {job.machine} in {result.duration:.1f} s" + (
            f": {lines[-1][:300]}" if lines else ""
        )
        return JobResult("ok", summary, data, alert=job.alert_on_failure)

    return run


def command_specs(jobs: list[CommandJob]) -> list[JobSpec]:
    return [
        JobSpec(job.name, f"runs {' '.join(job.argv)[:80]} on {job.machine}", job, command_job(job))
        for job in jobs
    ]
