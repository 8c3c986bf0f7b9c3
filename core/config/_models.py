"""Typed models of the clawops TOML config (SPEC section 2).

Every model forbids unknown keys, so a typo is reported instead of silently ignored. Checks that
need more than one key (a service's machine must exist, a default port must be inside its range)
live in ``_checks.py`` so that each is reported with the key it concerns.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from core.durations import parse_duration
from core.httplimits import Limits

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Port = Annotated[int, Field(ge=1, le=65535)]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]
EnvName = Annotated[str, Field(pattern=ENV_PATTERN)]


def _check_cron(expr: str) -> str:
    # APScheduler's own parser decides what a valid crontab line is.
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expr)
    except ValueError as exc:
        raise ValueError(f"{expr!r} is not a crontab expression (5 fields): {exc}") from None
    return expr


Cron = Annotated[str, AfterValidator(_check_cron)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(_Model):
    name: Name = "clawops"
    role: Literal["primary", "standby"] = "primary"
    peer_url: str | None = None
    data_dir: Path = Path("data")

    @model_validator(mode="after")
    def _standby_needs_peer(self) -> NodeConfig:
        if self.role == "standby" and not self.peer_url:
            raise ValueError("a standby node needs peer_url (the primary's sidecar /healthz URL)")
        return self


class TelegramConfig(_Model):
    token_env: EnvName = "CLAWOPS_TELEGRAM_TOKEN"
    api_base_url: str = "https://api.telegram.org/bot"
    group_policy: Literal["allowlist"] = "allowlist"
    allowed_chats: list[int] = []
    admins: list[int] = []
    viewers: list[int] = []
    alert_chat: int | None = None
    confirm_timeout: Duration = timedelta(seconds=60)
    warning_repeats: Annotated[int, Field(ge=1)] = 3
    # A command running longer shows "typing…" and a working message with its progress, which
    # its reply replaces (bot.working).
    progress_after: Duration = timedelta(seconds=2)
    # With no token, the bot is served by the built-in local Bot API on 127.0.0.1:local_api_port
    # (what `clawops chat` talks to).
    local_api_port: Port = 9011

    @property
    def alert_chat_id(self) -> int | None:
        """Where alerts go: alert_chat, else the first allowed chat."""
        if self.alert_chat is not None:
            return self.alert_chat
        return self.allowed_chats[0] if self.allowed_chats else None


class DatabaseConfig(_Model):
    url: str | None = None
    url_env: EnvName | None = None
    # Every database call (connect, pool checkout, statement, transaction) ends within this,
    # or fails with "database unavailable" (core.db).
    timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _known_driver(self) -> DatabaseConfig:
        if self.url and not self.url.startswith(("sqlite+aiosqlite://", "postgresql+psycopg://")):
            raise ValueError(
                f"url {self.url!r} uses an unsupported driver; allowed: "
                "'sqlite+aiosqlite:///PATH' or 'postgresql+psycopg://USER@HOST:PORT/DB'"
            )
        return self


class SidecarConfig(_Model):
    host: str = "127.0.0.1"
    port: Port = 9010
    token_env: EnvName | None = None
    public_url: str | None = None
    max_body: Annotated[int, Field(ge=1024)] = 64 * 1024
    # The HTTP edge (core.httpedge): Host names accepted besides loopback names, IP literals and
    # public_url's host; whether a loopback client with no forwarding headers may POST /api/log
    # without the token (the seed's cron scripts).
    allowed_hosts: list[str] = []
    trust_loopback: bool = True
    # Slow clients (core.httplimits): open connections at most, time to send one request's
    # headers and body, time a keep-alive connection may sit idle.
    max_connections: Annotated[int, Field(ge=16)] = 512
    read_timeout: Duration = timedelta(seconds=10)
    keepalive_timeout: Duration = timedelta(seconds=15)

    @model_validator(mode="after")
    def _positive_timeouts(self) -> SidecarConfig:
        if self.read_timeout <= timedelta(0) or self.keepalive_timeout <= timedelta(0):
            raise ValueError("read_timeout and keepalive_timeout must be positive")
        return self

    @property
    def limits(self) -> Limits:
        return Limits(
            max_connections=self.max_connections,
            read_timeout=self.read_timeout.total_seconds(),
            keepalive_timeout=self.keepalive_timeout.total_seconds(),
        )

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class SSHConfig(_Model):
    host: str
    user: str | None = None
    port: Port = 22
    key: str | None = None
    known_hosts: str | None = Field(
        default=None, description="path to a known_hosts file; default ~/.ssh/known_hosts"
    )


def _check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. '127.0.0.1:1055')")
    return value


HostPort = Annotated[str, AfterValidator(_check_host_port)]


class MachineConfig(_Model):
    name: Name
    os: Literal["macos", "linux", "windows"]
    address: str
    local: bool = False
    ssh: SSHConfig | None = None
    socks_proxy: HostPort | None = None
    timeout: Duration = timedelta(seconds=10)
    protected_ports: list[Port] = []  # /kill refuses these here (beside the global list)
    description: str = ""

    @property
    def runs_commands(self) -> bool:
        """Whether this node can run commands there: it is local, or reached over SSH. A machine
        with neither (no SSH to it from this node) is watched by its services' HTTP/TCP checks
        and the peer API only; anything that needs a command there raises ``NoSSH``."""
        return self.local or self.ssh is not None


class HttpCheck(_Model):
    type: Literal["http"]
    url: str
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200
    expect_body: str | None = None
    timeout: Duration = timedelta(seconds=5)


class TcpCheck(_Model):
    type: Literal["tcp"]
    host: str | None = None
    port: Port | None = None
    timeout: Duration = timedelta(seconds=5)


class CommandCheck(_Model):
    type: Literal["command"]
    argv: Annotated[list[str], Field(min_length=1)]
    expect_exit: int = 0
    timeout: Duration = timedelta(seconds=10)


HealthCheck = Annotated[HttpCheck | TcpCheck | CommandCheck, Field(discriminator="type")]


class ServiceConfig(_Model):
    name: Name
    machine: Name
    manager: Literal["launchd", "pm2", "systemd", "windows", "process"]
    unit: Annotated[str, Field(pattern=NAME_PATTERN)] | None = Field(
        default=None,
        description="launchd label, PM2 name, systemd unit, Windows service or process name; "
        "default: name",
    )
    launchd_domain: Literal["agent", "daemon"] = "agent"
    port: Port | None = None
    health: HealthCheck | None = None
    auto_restart: bool = False
    restart_settle: Duration | None = None  # default: the global restart_settle
    # Where /logs reads from: the service's log (launchd: its stdout, overriding the job's
    # StandardOutPath) and its error log (launchd: stderr, overriding StandardErrorPath). PM2
    # and systemd know their own; windows and process services need one of these.
    log_path: str | None = None
    error_log_path: str | None = None
    sudo: bool = False  # prefix management commands with `sudo -n` (LaunchDaemons, systemd)
    description: str = ""

    @property
    def unit_name(self) -> str:
        return self.unit or self.name


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def _parse_range(value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    match = _RANGE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{value!r} is not a port range; write '3000-3099' or '8081'")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{value!r} must be LOW-HIGH with 1 <= LOW <= HIGH <= 65535")
    return low, high


PortSpan = Annotated[tuple[int, int], BeforeValidator(_parse_range)]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, int) and not isinstance(value, bool) else value


class PortRangeConfig(_Model):
    project: Name
    machine: Name
    range: PortSpan
    default_port: Annotated[list[Port], BeforeValidator(_as_list)] = []
    # Names of the project's programs started by hand (e.g. ["node"]): a listener in the range
    # that no configured service owns (its pid or a descendant, core.ports) and with another
    # name is a conflict. Empty: the range alone flags nothing.
    processes: list[str] = []
    description: str = ""

    @model_validator(mode="after")
    def _defaults_inside(self) -> PortRangeConfig:
        low, high = self.range
        outside = [p for p in self.default_port if not low <= p <= high]
        if outside:
            raise ValueError(f"default_port {outside} is outside the range {low}-{high}")
        return self
