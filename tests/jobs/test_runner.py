"""The job runner: scheduling policy, run records, alerts from outcomes, active-node gating."""

from __future__ import annotations

import asyncio
import sys

import pytest

from core.errors import InputError
from jobs.base import JobResult, JobSpec
from jobs.registry import builtin_jobs

COMMANDS = [
    {"name": "git-sync", "machine": "here", "every": "1h",
     "argv": [sys.executable, "-c", "print('synced 3 repos')"]},
    {"name": "lume-update", "machine": "here", "cron": "0 10 * * *",
     "argv": [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]},
    {"name": "slow", "machine": "here", "every": "1h", "timeout": "1s",
     "argv": ["sleep", "30"]},
    {"name": "quiet", "machine": "here", "every": "1h", "alert_on_failure": False,
     "argv": ["false"]},
]  # fmt: skip


def load(h, names=None):
    for spec in builtin_jobs(h.config):
        if names is None or spec.name in names:
            h.runner.add(spec)


async def test_jobs_are_scheduled_with_coalescing_one_instance_and_a_misfire_grace(harness):
    h = harness({"jobs": {"commands": COMMANDS, "retention": {"misfire_grace": "5m"}}})
    load(h)
    h.scheduler.start(paused=True)
    retention = h.scheduler.get_job("retention")
    assert retention.coalesce is True and retention.max_instances == 1
    assert retention.misfire_grace_time == 300
    assert str(h.scheduler.get_job("lume-update").trigger).startswith("cron[")
    described = {i.name: i for i in h.runner.describe()}
    assert described["git-sync"].schedule == "every 1h"
    assert described["lume-update"].schedule == "cron 0 10 * * *"


async def test_a_command_run_is_recorded_with_its_output(harness):
    h = harness({"jobs": {"commands": COMMANDS}})
    load(h)
    run, result = await h.runner.run("git-sync")
    assert result.outcome == "ok" and "synced 3 repos" in result.summary
    assert run is not None and run.outcome == "ok" and run.ended_at is not None
    assert run.data["exit"] == 0 and "synced 3 repos" in run.data["stdout"]


async def test_a_failing_command_alerts_once_and_its_recovery_is_a_flip_too(harness):
    h = harness({"jobs": {"commands": COMMANDS}})
    load(h)
    for _ in range(3):
        run, result = await h.runner.run("lume-update")
        assert result.outcome == "failed" and "exit 3" in result.summary and "boom" in run.summary
    flips = await h.ctx.alerts.pending()
    assert [(f.key, f.new_state) for f in flips] == [("run:lume-update", "down")]
    assert h.woken == 1


async def test_a_command_past_its_timeout_fails_and_one_without_alerts_stays_quiet(harness):
    h = harness({"jobs": {"commands": COMMANDS}})
    load(h)
    _, slow = await h.runner.run("slow")
    assert slow.outcome == "failed" and "timed out" in slow.summary
    _, quiet = await h.runner.run("quiet")
    assert quiet.outcome == "failed"
    keys = [f.key for f in await h.ctx.alerts.pending()]
    assert keys == ["run:slow"]


async def test_an_unknown_job_is_refused_and_a_running_one_is_not_started_twice(harness):
    h = harness()
    started = asyncio.Event()
    release = asyncio.Event()

    async def long_job(ctx):
        started.set()
        await release.wait()
        return JobResult("ok", "done")

    h.runner.add(JobSpec("long", "waits", h.config.jobs.retention, long_job))
    with pytest.raises(InputError, match="no job 'nope'"):
        await h.runner.run("nope")
    first = asyncio.create_task(h.runner.run("long"))
    await started.wait()
    with pytest.raises(InputError, match="already running"):
        await h.runner.run("long")
    release.set()
    _, result = await first
    assert result.summary == "done"
    assert [r.outcome for r in await h.ctx.runs.recent("long")] == ["ok"]


async def test_a_crashing_job_is_a_failed_run_not_a_dead_scheduler(harness):
    h = harness()

    async def buggy(ctx):
        raise KeyError("oops")

    h.runner.add(JobSpec("buggy", "has a bug", h.config.jobs.retention, buggy))
    _, result = await h.runner.run("buggy")
    assert result.outcome == "failed" and "KeyError" in result.summary


async def test_active_only_jobs_run_only_on_the_active_node(harness):
    h = harness({"jobs": {"commands": [{**COMMANDS[0], "every": "1s"}]}})
    load(h, {"git-sync"})
    h.active = False
    h.scheduler.start()
    await asyncio.sleep(2.5)
    assert await h.ctx.runs.recent("git-sync") == []
    h.active = True
    for _ in range(60):
        if await h.ctx.runs.last("git-sync"):
            break
        await asyncio.sleep(0.1)
    last = await h.ctx.runs.last("git-sync")
    assert last is not None and last.outcome == "ok" and last.node == "test"
