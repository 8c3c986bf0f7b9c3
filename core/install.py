"""Installing clawops as a service: ``clawops service install|uninstall|status`` (SPEC 10).

``clawops service install`` (bot/cli_service.py) builds a ``ServiceSpec`` (core/units.py):

1. ``plan_install`` renders the plist or unit (no secret in it) and the env file (the secrets
   the config names; core/envfile.py). A value that cannot be written safely (a line break)
   raises here, before anything touches the disk.
2. ``install`` creates the log and env directories (0700), writes the env file (0600 from its
   first byte, replaced atomically) and the unit (0644, replaced atomically), then runs the
   manager's commands, each bounded by ``timeout``. A failing command raises InstallError with
   its stderr; the files stay, and the message says so (rerun, or ``service uninstall``).

With ``prefix`` every absolute path written is placed under it (packaging, tests) and no command
runs. ``dry_run`` writes and runs nothing and shows the files with secrets as ``***``.
"""

from __future__ import annotations

import os
import plistlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.envfile import ENV_FILE_VAR, parse_env, read_env_file, render_env
from core.errors import ConfigError
from core.secrets import private_dir, write_private
from core.svcctl import Runner, Step, run_steps
from core.units import (
    NOT_LOADED,
    Platform,
    ServiceId,
    ServiceSpec,
    detect_platform,
    render_launchd,
    render_systemd,
)

# The public surface: what `clawops service` needs, including core/units.py's names.
__all__ = [
    "Plan",
    "Platform",
    "ServiceId",
    "ServiceSpec",
    "detect_platform",
    "install",
    "installed_env_file",
    "kept_secrets",
    "plan_install",
    "render_launchd",
    "render_systemd",
    "status",
    "under",
    "uninstall",
]

Say = Callable[[str], None]


def under(prefix: Path | None, path: Path) -> Path:
    """``path`` placed under ``prefix`` (``/a/b`` -> ``PREFIX/a/b``); itself without one."""
    return prefix / path.relative_to(path.anchor) if prefix is not None else path


@dataclass(frozen=True)
class Plan:
    """What ``install`` will write and run, rendered up front so a bad value stops everything."""

    unit: bytes
    env_text: str
    env_shown: str  # the env file with ***
    env_names: tuple[str, ...]
    warnings: tuple[str, ...]


def plan_install(
    spec: ServiceSpec,
    environ: Mapping[str, str],
    kept: Mapping[str, str] | None = None,
    consequences: Mapping[str, str] | None = None,
) -> Plan:
    """The unit and env file. A secret set in ``environ`` wins; else one from the env file
    already installed (``kept``) stays; else it is missing and a warning says what follows."""
    kept = kept or {}
    values: dict[str, str] = {}
    warnings: list[str] = []
    for name in spec.secret_names:
        if environ.get(name):
            values[name] = environ[name]
        elif kept.get(name):
            values[name] = kept[name]
            warnings.append(f"{name} is not set here: kept its value from {spec.env_file}")
        else:
            then = (consequences or {}).get(name, "the service will run without it")
            warnings.append(f"{name} is not set: {then}")
    header = (
        f"Secrets of the clawops {spec.id.kind} service ({spec.id.label}), written by\n"
        "`clawops service install`. Keep it mode 0600; clawops refuses a looser one."
    )
    unit = render_launchd(spec) if spec.id.platform == "macos" else render_systemd(spec).encode()
    return Plan(
        unit=unit,
        env_text=render_env(values, header),
        env_shown=render_env(values, header, masked=True),
        env_names=tuple(values),
        warnings=tuple(warnings),
    )


def kept_secrets(spec: ServiceSpec, prefix: Path | None, say: Say) -> dict[str, str]:
    """The values in the env file already installed, to keep what this shell does not set."""
    path = under(prefix, spec.env_file)
    try:
        values, mode = read_env_file(path)
    except FileNotFoundError:
        return {}
    except (OSError, ConfigError) as exc:
        say(f"warning: the existing {path} cannot be read ({exc}); it will be replaced")
        return {}
    if mode & 0o077:
        say(
            f"warning: the existing {path} was mode {mode:04o} (others could read it): "
            "install replaces it by a 0600 one; rotate its secrets if others could read them"
        )
    return values


def _write_unit(path: Path, data: bytes) -> None:
    """Atomically, mode 0644: launchd refuses a daemon plist others can write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _own(spec: ServiceSpec, *paths: Path) -> None:
    if spec.owner is not None and os.geteuid() == 0:
        for path in paths:
            os.chown(path, *spec.owner)


def install(
    spec: ServiceSpec,
    plan: Plan,
    *,
    prefix: Path | None,
    dry_run: bool,
    runner: Runner,
    timeout: float,
    say: Say,
) -> None:
    unit_path = under(prefix, spec.id.unit_path)
    env_path = under(prefix, spec.env_file)
    log_dir = under(prefix, spec.log_dir)
    steps = spec.id.start_steps()
    if dry_run:
        say(f"would create {log_dir}/ (0700) and {env_path.parent}/ (0700)")
        say(f"would write {env_path} (0600):\n{plan.env_shown.rstrip()}")
        say(f"would write {unit_path} (0644):\n{plan.unit.decode().rstrip()}")
        for line in plan.warnings:
            say(f"warning: {line}")
        verb = "not run (--prefix)" if prefix is not None else "would run"
        for step in steps:
            say(f"{verb}: {step}")
        return
    for folder in (env_path.parent, log_dir):
        private_dir(folder)
        _own(spec, folder)
    write_private(env_path, plan.env_text.encode())
    _own(spec, env_path)
    say(f"wrote {env_path} (0600): {', '.join(plan.env_names) or 'no secrets'}")
    _write_unit(unit_path, plan.unit)
    say(f"wrote {unit_path} (0644)")
    for line in plan.warnings:
        say(f"warning: {line}")
    if prefix is not None:
        for step in steps:
            say(f"not run (--prefix): {step}")
        return
    run_steps(
        steps,
        runner,
        timeout,
        say,
        after_failure=f"the files written stay ({unit_path}, {env_path}): fix the cause and "
        "run `clawops service install` again, or `clawops service uninstall`",
    )
    say(f"installed {spec.id.label}; logs in {log_dir}")


def installed_env_file(ident: ServiceId, prefix: Path | None) -> Path | None:
    """The env file the installed unit names (None when there is no unit, or it names none)."""
    path = under(prefix, ident.unit_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if ident.platform == "macos":
        try:
            env = plistlib.loads(data).get("EnvironmentVariables", {})
        except (plistlib.InvalidFileException, ValueError, AttributeError):
            return None
        value = env.get(ENV_FILE_VAR) if isinstance(env, dict) else None
        return Path(value) if isinstance(value, str) else None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("EnvironmentFile="):
            return Path(line.removeprefix("EnvironmentFile=").lstrip("-").replace("%%", "%"))
    return None


def uninstall(
    ident: ServiceId,
    *,
    prefix: Path | None,
    dry_run: bool,
    runner: Runner,
    timeout: float,
    say: Say,
) -> None:
    """Stop the service, remove its unit and env file; logs and data stay. Idempotent."""
    unit_path = under(prefix, ident.unit_path)
    env_file = installed_env_file(ident, prefix)
    env_path = under(prefix, env_file) if env_file is not None else None
    if not unit_path.exists():
        say(f"not installed: there is no {unit_path}")
        return
    steps = ident.stop_steps()
    reload = [Step(("systemctl", "--user", "daemon-reload"))] if ident.platform == "linux" else []
    if dry_run or prefix is not None:
        verb = "not run (--prefix)" if prefix is not None else "would run"
        for step in steps:
            say(f"{verb}: {step}")
    else:
        run_steps(steps, runner, timeout, say, after_failure=f"nothing was removed ({unit_path})")
    removed = [p for p in (unit_path, env_path) if p is not None and p.exists()]
    for path in removed:
        if dry_run:
            say(f"would remove {path}")
        else:
            path.unlink()
            say(f"removed {path}")
    if reload and not dry_run and prefix is None:
        run_steps(reload, runner, timeout, say, after_failure="the files are removed")
    if not dry_run:
        say(f"uninstalled {ident.label} (logs and data stay)")


def status(ident: ServiceId, *, prefix: Path | None, runner: Runner, timeout: float) -> list[str]:
    """What is installed where, whether the env file is private, and the manager's view."""
    unit_path = under(prefix, ident.unit_path)
    if not unit_path.exists():
        return [f"{ident.label}: not installed (no {unit_path})"]
    lines = [f"{ident.label}: installed at {unit_path}"]
    env_file = installed_env_file(ident, prefix)
    if env_file is None:
        lines.append("warning: the unit names no env file (was it written by hand?)")
    else:
        env_path = under(prefix, env_file)
        try:
            mode = env_path.stat().st_mode & 0o777
        except FileNotFoundError:
            lines.append(f"warning: its env file {env_path} is missing: the service will fail")
        else:
            shown = f"env file {env_path} (mode {mode:04o})"
            lines.append(shown if not mode & 0o077 else f"warning: {shown}: run chmod 600 on it")
            try:
                parse_env(env_path.read_text(), str(env_path))
            except (OSError, ConfigError, UnicodeDecodeError) as exc:
                lines.append(f"warning: the env file cannot be read: {exc}")
    if prefix is not None:
        return lines
    step = ident.status_step()
    result = runner(step.argv, timeout)
    lines.append(f"{step}: {describe(ident, result.returncode, result.stdout, result.stderr)}")
    return lines


def describe(ident: ServiceId, code: int | None, stdout: str, stderr: str) -> str:
    """The manager's answer in one line."""
    if code is None:
        return stderr.strip()
    if ident.platform == "linux":
        return (stdout.strip() or stderr.strip() or f"exit {code}").splitlines()[0]
    if code != 0:
        return "not loaded" if code in NOT_LOADED else (stderr.strip() or f"exit {code}")
    keys = ("state =", "pid =", "last exit code =", "runs =")
    found = [line.strip() for line in stdout.splitlines() if line.strip().startswith(keys)]
    return ", ".join(dict.fromkeys(found)) or "loaded"
