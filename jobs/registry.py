"""Every job a node schedules: the built-in bots of SPEC 4 and the operator's commands.

Each built-in job lives in its own module and is listed here once, with its ``[jobs.*]``
settings. The failover watchdog is not here: it drives the bot's polling, so the node runs it.
"""

from __future__ import annotations

from core.config import Config
from jobs.base import JobSpec
from jobs.checkins import checkin_monitor
from jobs.claw_recovery import SETTINGS as CLAW_RECOVERY
from jobs.claw_recovery import claw_recovery
from jobs.claws_backup import claws_backup
from jobs.claws_health import claws_health
from jobs.claws_purge import claws_purge
from jobs.cleaner import cleaner
from jobs.commands import command_specs
from jobs.healer import healer
from jobs.heartbeat import heartbeat
from jobs.retention import retention
from jobs.status_report import status_report
from jobs.system_cleanup import system_cleanup


def builtin_jobs(config: Config) -> list[JobSpec]:
    jobs = config.jobs
    specs = [
        JobSpec("retention", "purges settled history past its TTL", jobs.retention, retention),
        JobSpec("healer", "verified auto-restarts, warnings, emergency mode", jobs.healer, healer),
        JobSpec("cleaner", "simulators, orphan processes, port conflicts", jobs.cleaner, cleaner),
        JobSpec("system_cleanup", "per-machine cleanup tasks", jobs.system_cleanup, system_cleanup),
        JobSpec("heartbeat", "fleet sweep to heartbeat-data.json", jobs.heartbeat, heartbeat),
        JobSpec("checkin_monitor", "watches check-ins", jobs.checkin_monitor, checkin_monitor),
        JobSpec("status_report", "a digest for the chat", jobs.status_report, status_report),
        JobSpec(
            "claw_recovery", "finishes or rolls back stuck claws", CLAW_RECOVERY, claw_recovery
        ),
        JobSpec(
            "claws_health", "Minis' agents and claws' gateways", jobs.claws_health, claws_health
        ),
        JobSpec("claws_backup", "backs every active claw up", jobs.claws_backup, claws_backup),
        JobSpec(
            "claws_purge", "purges claws deleted past retention", jobs.claws_purge, claws_purge
        ),
    ]
    return specs + command_specs(jobs.commands)
