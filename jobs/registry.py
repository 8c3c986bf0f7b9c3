"""Every job a node schedules: the built-in bots of SPEC 4 and the operator's commands.

Each built-in job lives in its own module and is listed here once, with its ``[jobs.*]``
settings. The failover watchdog is not here: it drives the bot's polling, so the node runs it.
"""

from __future__ import annotations

from core.config import Config
from jobs.base import JobSpec
from jobs.commands import command_specs
from jobs.retention import retention


def builtin_jobs(config: Config) -> list[JobSpec]:
    jobs = config.jobs
    specs = [
        JobSpec("retention", "purges old status-log and audit rows", jobs.retention, retention),
    ]
    return specs + command_specs(jobs.commands)
