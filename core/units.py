"""What a clawops service is to its manager: a launchd job (macOS) or a systemd user unit (Linux).

``ServiceId`` names a service and where its manager keeps it (enough to stop and remove it);
``ServiceSpec`` is everything its unit says; ``render_launchd`` and ``render_systemd`` turn a spec
into the file, with no secret in it (those go to the env file, core/envfile.py). core/install.py
writes the files and runs the commands.

Logs: launchd writes the process's stdout/stderr to ``<logs>/node.out.log`` and
``node.err.log``; ``CLAWOPS_LOG_FILE=<logs>/node.log`` makes clawops log to a size-bounded
rotating file and copy-truncate those two at start when they are over the limit. systemd sends
stdout/stderr to the journal, which bounds itself.
"""

from __future__ import annotations

import plistlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.envfile import ENV_FILE_VAR
from core.errors import InstallError
from core.svcctl import Step

Platform = Literal["macos", "linux"]
Kind = Literal["node", "agent"]
LOG_FILE_VAR = "CLAWOPS_LOG_FILE"
# launchd starts jobs with PATH=/usr/bin:/bin:/usr/sbin:/sbin; Homebrew's tools (pm2, node,
# cloudflared) live in /opt/homebrew/bin (Apple silicon) or /usr/local/bin (Intel).
SERVICE_PATH = "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
THROTTLE_INTERVAL = 10  # seconds launchd waits between two starts of a crashing job
RESTART_SEC = 5  # systemd's pause before a restart
NOT_LOADED = frozenset({3, 113})  # launchctl bootout: "No such process" / "Could not find service"


def detect_platform(sys_platform: str, override: str | None = None) -> Platform:
    """``--platform`` if given, else the host's; Windows is refused with what to do instead."""
    if override in ("macos", "linux"):
        return override  # type: ignore[return-value]
    if sys_platform == "darwin":
        return "macos"
    if sys_platform.startswith("linux"):
        return "linux"
    raise InstallError(
        f"`clawops service` supports macOS (launchd) and Linux (systemd), not {sys_platform}: "
        "run `clawops run --config PATH` under Task Scheduler or NSSM instead"
    )


@dataclass(frozen=True)
class ServiceId:
    """Which service, where its manager keeps it: enough to find, stop and remove it."""

    kind: Kind
    platform: Platform
    home: Path  # the user's home: LaunchAgents and systemd user units live under it
    uid: int  # launchd's gui/<uid> domain for the node

    @property
    def label(self) -> str:
        return f"dev.clawops.{self.kind}"

    @property
    def unit_name(self) -> str:
        return "clawops.service" if self.kind == "node" else "clawops-agent.service"

    @property
    def unit_path(self) -> Path:
        if self.platform == "linux":
            return self.home / ".config/systemd/user" / self.unit_name
        if self.kind == "agent":  # a LaunchDaemon: runs at boot, before anyone logs in
            return Path("/Library/LaunchDaemons") / f"{self.label}.plist"
        return self.home / "Library/LaunchAgents" / f"{self.label}.plist"

    @property
    def domain(self) -> str:
        return "system" if self.kind == "agent" else f"gui/{self.uid}"

    @property
    def needs_root(self) -> bool:
        return self.platform == "macos" and self.kind == "agent"

    def start_steps(self) -> list[Step]:
        if self.platform == "macos":
            # bootout first: bootstrap refuses a job that is loaded already.
            return [
                Step(("launchctl", "bootout", f"{self.domain}/{self.label}"), NOT_LOADED),
                Step(("launchctl", "bootstrap", self.domain, str(self.unit_path))),
            ]
        # enable + restart rather than `enable --now`: a reinstall must restart a running
        # service so it reads the new unit and env file.
        return [
            Step(("systemctl", "--user", "daemon-reload")),
            Step(("systemctl", "--user", "enable", self.unit_name)),
            Step(("systemctl", "--user", "restart", self.unit_name)),
        ]

    def stop_steps(self) -> list[Step]:
        if self.platform == "macos":
            return [Step(("launchctl", "bootout", f"{self.domain}/{self.label}"), NOT_LOADED)]
        return [Step(("systemctl", "--user", "disable", "--now", self.unit_name))]

    def status_step(self) -> Step:
        if self.platform == "macos":
            return Step(("launchctl", "print", f"{self.domain}/{self.label}"))
        return Step(("systemctl", "--user", "is-active", self.unit_name))


@dataclass(frozen=True)
class ServiceSpec:
    """Everything the unit says. Paths are the real ones (``prefix`` is applied when writing)."""

    id: ServiceId
    program: tuple[str, ...]  # argv: the clawops executable, then `run --config PATH` or so
    working_dir: Path
    log_dir: Path
    env_file: Path
    secret_names: tuple[str, ...] = ()
    user: str | None = None  # the LaunchDaemon's UserName (the agent must not run as root)
    owner: tuple[int, int] | None = None  # chown the agent's files to (uid, gid) under sudo
    extra_env: tuple[tuple[str, str], ...] = ()  # non-secret variables (the agent's HOME)

    def __post_init__(self) -> None:
        paths = [self.working_dir, self.log_dir, self.env_file, self.id.home]
        if not self.program or not Path(self.program[0]).is_absolute():
            raise InstallError("the service's program must be an absolute path")
        if not all(p.is_absolute() for p in paths):
            raise InstallError("the service's paths must be absolute")
        texts = [*self.program, *map(str, paths), *(v for _, v in self.extra_env)]
        if any(c in t for t in texts for c in "\n\r\0"):
            raise InstallError("a path or argument holds a line break: it cannot go in a unit")
        if self.id.needs_root and self.user in (None, "root"):
            raise InstallError(
                "the agent would run its gateways as root: run `sudo clawops service install "
                "--agent` from the account that should own the claws (SUDO_USER is used)"
            )

    @property
    def stem(self) -> str:
        return self.id.kind

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.stem}.log"

    @property
    def out_log(self) -> Path:
        return self.log_dir / f"{self.stem}.out.log"

    @property
    def err_log(self) -> Path:
        return self.log_dir / f"{self.stem}.err.log"


def render_launchd(spec: ServiceSpec) -> bytes:
    """The job's plist. KeepAlive restarts it only after a crash or a failing exit: a clean exit
    (an operator's deliberate stop) stays down, as systemd's Restart=on-failure does."""
    env = {
        ENV_FILE_VAR: str(spec.env_file),
        LOG_FILE_VAR: str(spec.log_file),
        "PATH": SERVICE_PATH,
        **dict(spec.extra_env),
    }
    job: dict[str, Any] = {
        "Label": spec.id.label,
        "ProgramArguments": list(spec.program),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": THROTTLE_INTERVAL,
        "WorkingDirectory": str(spec.working_dir),
        "StandardOutPath": str(spec.out_log),
        "StandardErrorPath": str(spec.err_log),
        "EnvironmentVariables": env,
        "ProcessType": "Standard",
    }
    if spec.user is not None and spec.id.kind == "agent":
        job["UserName"] = spec.user
    return plistlib.dumps(job, sort_keys=True)


def _unit_word(text: str, dollars: bool = False) -> str:
    """One word of a unit line, quoted if needed, % doubled (specifiers). ``dollars``: $ doubled
    too, for ExecStart's arguments (its program path and Environment= expand no variables)."""
    text = text.replace("%", "%%")
    text = text.replace("$", "$$") if dollars else text
    if text and not any(c in text for c in " \t\"'\\;"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unit_path(path: Path) -> str:
    return str(path).replace("%", "%%")


def render_systemd(spec: ServiceSpec) -> str:
    """The user unit. Secrets come from EnvironmentFile=; stdout/stderr go to the journal."""
    what = "clawops node" if spec.id.kind == "node" else "clawops Mini agent"
    program, *args = spec.program
    exec_start = " ".join([_unit_word(program), *(_unit_word(a, dollars=True) for a in args)])
    env_lines = [f"{LOG_FILE_VAR}={spec.log_file}", *(f"{k}={v}" for k, v in spec.extra_env)]
    environment = "\n".join(f"Environment={_unit_word(line)}" for line in env_lines)
    # The node re-reads its config on SIGHUP (`systemctl --user reload clawops`).
    reload = "\nExecReload=/bin/kill -HUP $MAINPID" if spec.id.kind == "node" else ""
    return f"""\
# Written by `clawops service install`; `clawops service uninstall` removes it.
# Secrets are not here: they are in {spec.env_file} (mode 0600).
# {LOG_FILE_VAR}: clawops logs to this size-bounded, rotating file; stdout/stderr go to the
# journal (journalctl --user -u {spec.id.unit_name}).
# A user unit runs while you are logged in; `loginctl enable-linger $USER` starts it at boot.
[Unit]
Description={what}

[Service]
Type=simple
ExecStart={exec_start}{reload}
WorkingDirectory={_unit_path(spec.working_dir)}
EnvironmentFile={_unit_path(spec.env_file)}
{environment}
Restart=on-failure
RestartSec={RESTART_SEC}

[Install]
WantedBy=default.target
"""
