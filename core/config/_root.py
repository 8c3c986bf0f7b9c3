"""The whole config, the embedded default, and the checks that span several tables."""

from __future__ import annotations

import os
import platform
import re
import socket
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from core.config._alerts import AlertsConfig
from core.config._jobs import (
    CheckinConfig,
    ClawsConfig,
    JobsConfig,
    LlmAccountConfig,
    OrgConfig,
    ResourceConfig,
)
from core.config._models import (
    DatabaseConfig,
    Duration,
    MachineConfig,
    NodeConfig,
    Port,
    PortRangeConfig,
    ServiceConfig,
    SidecarConfig,
    TelegramConfig,
    _Model,
)
from core.errors import Problem, StartupRefused
from core.secrets import MIN_TOKEN, redact_urls


class Config(_Model):
    node: NodeConfig = NodeConfig()
    telegram: TelegramConfig = TelegramConfig()
    database: DatabaseConfig = DatabaseConfig()
    sidecar: SidecarConfig = SidecarConfig()
    machines: list[MachineConfig] = []
    services: list[ServiceConfig] = []
    port_ranges: list[PortRangeConfig] = []
    jobs: JobsConfig = JobsConfig()
    checkins: list[CheckinConfig] = []
    alerts: AlertsConfig = AlertsConfig()
    claws: ClawsConfig = ClawsConfig()
    orgs: list[OrgConfig] = []
    llm_accounts: list[LlmAccountConfig] = []
    resources: list[ResourceConfig] = []
    # Ports /kill refuses on every machine (beside the node's own, agents' and SSH ports).
    protected_ports: list[Port] = []
    # How long a restarted service has to prove it is up (its manager says running, its health
    # check passes, and it does not crash again); a service may set its own.
    restart_settle: Duration = timedelta(seconds=10)

    # -- derived values -------------------------------------------------------------------

    def data_dir(self, base: Path | None = None) -> Path:
        """The data directory, relative paths taken from ``base`` (the config file's folder)."""
        path = self.node.data_dir.expanduser()
        return path if path.is_absolute() or base is None else base / path

    def database_url(self, base: Path | None = None) -> str:
        """The SQLAlchemy URL: url_env's value, else url, else SQLite in the data dir."""
        if self.database.url_env:
            value = os.environ.get(self.database.url_env)
            if not value:
                raise StartupRefused(
                    f"database.url_env names {self.database.url_env}, which is not set"
                )
            try:  # the file's url rules, with the password kept out of the message
                DatabaseConfig(url=value)
            except ValidationError as exc:
                reason = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
                raise StartupRefused(
                    f"{self.database.url_env} (database.url_env): {redact_urls(reason)}"
                ) from None
            return value
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{self.data_dir(base).resolve() / 'clawops.db'}"

    def sidecar_token(self) -> str | None:
        """The sidecar's API token from its env var, or None when none is configured/set."""
        name = self.sidecar.token_env
        return (os.environ.get(name) or None) if name else None

    def telegram_token(self) -> str | None:
        return os.environ.get(self.telegram.token_env) or None

    def local_machine(self) -> MachineConfig | None:
        return next((m for m in self.machines if m.local), None)

    def machine(self, name: str) -> MachineConfig | None:
        return next((m for m in self.machines if m.name == name), None)

    @property
    def alert_chat_id(self) -> int | None:
        """Where alerts go: alerts.alert_chat, else telegram.alert_chat, else the first allowed
        chat."""
        if self.alerts.alert_chat is not None:
            return self.alerts.alert_chat
        return self.telegram.alert_chat_id

    def alert_chat_problem(self) -> str | None:
        """Why presses in the alert chat would be ignored (it is neither an allowed chat nor an
        admin's private chat), or None."""
        chat, t = self.alert_chat_id, self.telegram
        if chat is None or chat in t.allowed_chats or chat in t.admins:
            return None
        return (
            f"alerts go to chat {chat}, which is not in telegram.allowed_chats nor an admin's "
            "private chat: presses there are ignored, so its alert buttons do nothing"
        )

    def settle_for(self, service: ServiceConfig) -> timedelta:
        """The settle window of a restart of ``service``: its own, else the global one."""
        return service.restart_settle or self.restart_settle


def _this_os() -> Literal["macos", "linux", "windows"]:
    system = platform.system()
    if system == "Darwin":
        return "macos"
    return "windows" if system == "Windows" else "linux"


def default_config() -> Config:
    """The embedded default: SQLite in ./data, this machine as the only (local) machine."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0]) or "local"
    machine = MachineConfig(name=host, os=_this_os(), address="127.0.0.1", local=True)
    return Config(node=NodeConfig(name=host), machines=[machine])


def cross_check(config: Config) -> list[Problem]:
    """Checks that relate several tables; each problem names the key it concerns."""
    problems: list[Problem] = []
    machines = {m.name for m in config.machines}
    allowed = ", ".join(sorted(machines)) or "(no machines configured)"

    def duplicates(kind: str, names: list[str]) -> None:
        for name, count in Counter(names).items():
            if count > 1:
                problems.append(Problem(kind, f"{name!r} is defined {count} times"))

    duplicates("machines", [m.name for m in config.machines])
    duplicates("services", [f"{s.name}@{s.machine}" for s in config.services])
    duplicates("checkins", [c.job_id for c in config.checkins])
    duplicates("jobs.commands", [c.name for c in config.jobs.commands])
    duplicates("orgs", [o.slug for o in config.orgs])
    duplicates("llm_accounts", [a.name for a in config.llm_accounts])
    duplicates("resources", [r.name for r in config.resources])
    duplicates("claws.minis", [m.hostname for m in config.claws.minis])

    local = [m.name for m in config.machines if m.local]
    if len(local) > 1:
        problems.append(Problem("machines", f"only one machine can be local; got {local}"))

    def known(key: str, name: str) -> None:
        if name not in machines:
            problems.append(Problem(key, f"machine {name!r} is not defined; allowed: {allowed}"))

    for i, svc in enumerate(config.services):
        known(f"services[{i}] ({svc.name}).machine", svc.machine)
    for i, rng in enumerate(config.port_ranges):
        known(f"port_ranges[{i}] ({rng.project}).machine", rng.machine)
    for i, cmd in enumerate(config.jobs.commands):
        known(f"jobs.commands[{i}] ({cmd.name}).machine", cmd.machine)
    for i, task in enumerate(config.jobs.system_cleanup.tasks):
        known(f"jobs.system_cleanup.tasks[{i}].machine", task.machine)

    problems += _needs_commands(config)

    # Two services on one machine cannot both listen on one port.
    owners: dict[tuple[str, int], str] = {}
    for i, svc in enumerate(config.services):
        if svc.port is None:
            continue
        other = owners.setdefault((svc.machine, svc.port), svc.name)
        if other != svc.name:
            problems.append(
                Problem(
                    f"services[{i}] ({svc.name}).port",
                    f"port {svc.port} on {svc.machine} is already the port of {other!r}",
                )
            )

    if config.node.role == "standby" and config.jobs.failover.enabled is False:
        problems.append(
            Problem("jobs.failover.enabled", "a standby node needs the failover watchdog")
        )
    if not config.sidecar.is_loopback and not config.sidecar.token_env:
        problems.append(
            Problem(
                "sidecar.token_env",
                f"the sidecar binds {config.sidecar.host!r}, which is not loopback; "
                "set token_env to the env var holding its API token (or bind 127.0.0.1)",
            )
        )
    return problems


def _needs_commands(config: Config) -> list[Problem]:
    """What would need a command on a machine without SSH (neither local nor [machines.ssh]).

    Refused rather than warned about: such a thing could never happen (a scheduled command
    that always fails, an auto-restart that never restarts), and a config that promises it
    would mislead whoever reads it."""
    problems: list[Problem] = []
    blind = {m.name for m in config.machines if not m.runs_commands}

    def why(name: str) -> str:
        return f"machine {name!r} has no SSH from this node (no [machines.ssh] and not local)"

    for i, cmd in enumerate(config.jobs.commands):
        if cmd.machine in blind:
            problems.append(
                Problem(
                    f"jobs.commands[{i}] ({cmd.name}).machine",
                    f"{why(cmd.machine)}: a scheduled command needs SSH or the local machine",
                )
            )
    for i, task in enumerate(config.jobs.system_cleanup.tasks):
        if task.machine in blind:
            problems.append(
                Problem(
                    f"jobs.system_cleanup.tasks[{i}].machine",
                    f"{why(task.machine)}: a cleanup task needs SSH or the local machine",
                )
            )
    for i, svc in enumerate(config.services):
        if svc.machine not in blind:
            continue
        if svc.auto_restart:
            problems.append(
                Problem(
                    f"services[{i}] ({svc.name}).auto_restart",
                    f"{why(svc.machine)}: it cannot be restarted from here; set auto_restart "
                    "= false (its HTTP/TCP check still watches it) or add [machines.ssh]",
                )
            )
        if svc.health is not None and svc.health.type == "command":
            problems.append(
                Problem(
                    f"services[{i}] ({svc.name}).health",
                    f"{why(svc.machine)}: a command check runs on its machine; use an http or "
                    "tcp check, which this node runs itself",
                )
            )
    return problems


def startup_refusals(config: Config) -> list[str]:
    """Why ``clawops run`` must not start with this config in this environment (empty: fine)."""
    reasons = []
    if not config.sidecar.is_loopback and config.sidecar_token() is None:
        env = config.sidecar.token_env or "sidecar.token_env"
        reasons.append(
            f"the sidecar would listen on {config.sidecar.host}:{config.sidecar.port} "
            f"with no API token: set {env} (or bind 127.0.0.1)"
        )
    token = config.sidecar_token()
    if token is not None and len(token) < MIN_TOKEN:
        reasons.append(
            f"{config.sidecar.token_env} is {len(token)} characters; the sidecar's API token "
            f"needs {MIN_TOKEN}+ (e.g. `openssl rand -hex 32`)"
        )
    return reasons
