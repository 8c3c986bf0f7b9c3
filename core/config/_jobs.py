"""Config of the scheduled bots (``[jobs.*]``), scheduled commands and check-ins (SPEC 4)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import Field, model_validator

from core.config._models import Cron, Duration, EnvName, Name, _Model


class JobConfig(_Model):
    """What every scheduled job has: when it runs and how missed runs are handled.

    Exactly one of ``every`` and ``cron`` sets the schedule. Macs sleep: a run missed by less
    than ``misfire_grace`` is run once on wake (APScheduler coalesces the rest).
    """

    enabled: bool = True
    every: Duration | None = None
    cron: Cron | None = None
    timezone: str | None = None
    misfire_grace: Duration = timedelta(minutes=10)
    active_only: bool = True

    @model_validator(mode="before")
    @classmethod
    def _replace_default_schedule(cls, data: Any) -> Any:
        # A job with a default 'every' configured with 'cron' (or the reverse) takes the new one.
        if isinstance(data, dict):
            if "every" in data and "cron" not in data:
                data = {**data, "cron": None}
            elif "cron" in data and "every" not in data:
                data = {**data, "every": None}
        return data

    @model_validator(mode="after")
    def _one_schedule(self) -> JobConfig:
        if self.every is not None and self.cron is not None:
            raise ValueError("set either 'every' or 'cron', not both")
        if self.every is None and self.cron is None:
            raise ValueError("set 'every' (e.g. '2h') or 'cron' (e.g. '0 9 * * *')")
        return self


class HeartbeatJob(JobConfig):
    every: Duration | None = timedelta(minutes=60)
    output_path: str = "heartbeat-data.json"


class HealerJob(JobConfig):
    every: Duration | None = timedelta(hours=2)
    max_restarts_per_run: Annotated[int, Field(ge=0)] = 2
    min_uptime: Duration = timedelta(minutes=2)
    max_unstable: Annotated[int, Field(ge=1)] = 3
    swap_warn_percent: Annotated[float, Field(gt=0, le=100)] = 80
    memory_warn_percent: Annotated[float, Field(gt=0, le=100)] = 90
    disk_warn_percent: Annotated[float, Field(gt=0, le=100)] = 90


class CleanerJob(JobConfig):
    every: Duration | None = timedelta(hours=2)
    simulator_threshold: Annotated[int, Field(ge=1)] = 20
    orphan_min_age: Duration = timedelta(hours=2)
    orphan_patterns: list[str] = []
    kill_orphans: bool = False


class CleanupTask(_Model):
    machine: Name
    argv: Annotated[list[str], Field(min_length=1)]
    timeout: Duration = timedelta(minutes=2)


class SystemCleanupJob(JobConfig):
    every: Duration | None = timedelta(minutes=15)
    tasks: list[CleanupTask] = []


class StatusReportJob(JobConfig):
    cron: Cron | None = "0 9 * * *"


class CheckinMonitorJob(JobConfig):
    every: Duration | None = timedelta(minutes=1)


class RetentionJob(JobConfig):
    """How long each growing table keeps its settled rows (``jobs.retention``'s rules say which
    rows are never purged: a running job run, an unsent flip or message, a live lease...)."""

    every: Duration | None = timedelta(hours=1)
    status_log_ttl: Duration = timedelta(hours=48)
    audit_ttl: Duration = timedelta(hours=24)
    job_runs_ttl: Duration = timedelta(days=14)
    alert_flips_ttl: Duration = timedelta(days=30)
    outbox_ttl: Duration = timedelta(days=7)
    web_ttl: Duration = timedelta(days=7)
    leases_ttl: Duration = timedelta(days=1)
    mutes_ttl: Duration = timedelta(days=30)
    batch_size: Annotated[int, Field(ge=1)] = 1000


class FailoverJob(JobConfig):
    every: Duration | None = timedelta(seconds=30)
    active_only: bool = False
    failures: Annotated[int, Field(ge=1)] = 3
    successes: Annotated[int, Field(ge=1)] = 5
    min_dwell: Duration = timedelta(minutes=10)
    timeout: Duration = timedelta(seconds=5)


class ClawsHealthJob(JobConfig):
    """Asks every Mini's agent for its health and its claws' gateways (issue 14).

    A Mini goes offline after ``failures`` unanswered rounds in a row and online again after
    ``successes`` answered ones; a gateway still starting after ``start_grace`` is failing its
    handshake. ``timeout`` bounds each agent's answer."""

    every: Duration | None = timedelta(seconds=60)
    misfire_grace: Duration = timedelta(seconds=60)
    failures: Annotated[int, Field(ge=1)] = 3
    successes: Annotated[int, Field(ge=1)] = 2
    start_grace: Duration = timedelta(minutes=2)
    timeout: Duration = timedelta(seconds=10)


class ClawsBackupJob(JobConfig):
    """Backs every active claw up with the gateway's own tool, into its bucket (issue 14)."""

    cron: Cron | None = "30 3 * * *"
    misfire_grace: Duration = timedelta(hours=6)
    timeout: Duration = timedelta(minutes=10)


class ClawsPurgeJob(JobConfig):
    """Deletes the buckets (and rows) of claws deleted ``claws.deleted_retention`` ago."""

    every: Duration | None = timedelta(hours=6)
    misfire_grace: Duration = timedelta(hours=6)


class CommandJob(JobConfig):
    """A command the operator schedules (the crontab's replacement); argv is never from chat.

    It runs without the node's secrets in its environment (every variable a ``*_env`` key
    names, every ``CLAWOPS_*``) except the names listed in ``env``."""

    name: Name
    machine: Name
    argv: Annotated[list[str], Field(min_length=1)]
    timeout: Duration = timedelta(minutes=5)
    alert_on_failure: bool = True
    env: list[EnvName] = []


class JobsConfig(_Model):
    heartbeat: HeartbeatJob = HeartbeatJob()
    healer: HealerJob = HealerJob()
    cleaner: CleanerJob = CleanerJob()
    system_cleanup: SystemCleanupJob = SystemCleanupJob()
    status_report: StatusReportJob = StatusReportJob()
    checkin_monitor: CheckinMonitorJob = CheckinMonitorJob()
    retention: RetentionJob = RetentionJob()
    failover: FailoverJob = FailoverJob()
    claws_health: ClawsHealthJob = ClawsHealthJob()
    claws_backup: ClawsBackupJob = ClawsBackupJob()
    claws_purge: ClawsPurgeJob = ClawsPurgeJob()
    commands: list[CommandJob] = []


class CheckinConfig(_Model):
    """A job that reports to POST /api/log and is expected every ``period`` (or on ``cron``)."""

    job_id: Annotated[str, Field(min_length=1, max_length=128)]
    period: Duration | None = None
    cron: Cron | None = None
    timezone: str | None = None
    grace: Duration = timedelta(minutes=30)
    description: str = ""

    @model_validator(mode="after")
    def _one_schedule(self) -> CheckinConfig:
        if (self.period is None) == (self.cron is None):
            raise ValueError("set exactly one of 'period' (e.g. '2h') and 'cron'")
        return self


class R2Config(_Model):
    endpoint_url: str
    region: str = "auto"
    access_key_id_env: EnvName
    secret_access_key_env: EnvName
    bucket_prefix: str = "claw-"


class MiniConfig(_Model):
    """A Mac Mini of the claws fleet, as ``clawops minis add`` takes it."""

    hostname: Name
    agent_url: str
    agent_token_env: EnvName
    ports: Annotated[str, Field(pattern=r"^\d+-\d+$")]
    capacity: Annotated[int, Field(ge=1)]
    tunnel_suffix: str | None = None
    gateway_host: str | None = None


class ClawsConfig(_Model):
    deployment_target: str = "mac-mini"
    secret_key_env: EnvName = "CLAWOPS_SECRET_KEY"
    tunnel_domain: str | None = None
    provision_timeout: Duration = timedelta(minutes=3)
    # Backups kept per claw (the newest); a deleted claw's bucket is kept this long for
    # /claw restore, then purged.
    backups_keep: Annotated[int, Field(ge=1, le=1000)] = 7
    deleted_retention: Duration = timedelta(days=30)
    r2: R2Config | None = None
    minis: list[MiniConfig] = []

    @model_validator(mode="after")
    def _supported_target(self) -> ClawsConfig:
        if self.deployment_target == "cloudflare":
            raise ValueError(
                "deployment_target 'cloudflare' is not supported by clawops; use 'mac-mini'"
            )
        if self.deployment_target != "mac-mini":
            raise ValueError(f"deployment_target {self.deployment_target!r}: allowed 'mac-mini'")
        return self


class LlmAccountConfig(_Model):
    """An LLM account the bots use; all of them in cooldown at once is emergency mode (SPEC 7b)."""

    name: Name
    provider: Annotated[str, Field(min_length=1, max_length=64)] = "anthropic"
    description: str = ""


class ResourceConfig(_Model):
    """A scarce resource the fleet shares (the Ollama server): at most ``max_concurrent`` leases
    at once; a lease whose holder stops heartbeating for ``lease_ttl`` expires (SPEC 7b)."""

    name: Name
    max_concurrent: Annotated[int, Field(ge=1)] = 1
    lease_ttl: Duration = timedelta(seconds=60)
    description: str = ""


class OrgConfig(_Model):
    slug: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    name: str
    members: list[int] = []
