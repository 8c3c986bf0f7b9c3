"""``clawops service install|uninstall|status``: clawops under launchd or systemd (SPEC 10).

This module gathers the facts (which executable, which config, whose account, which secrets)
and core/install.py renders and writes; the agent's config is read here, since core must not
import the agent package.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import sys
import tomllib
from pathlib import Path

from core.config import load_config
from core.errors import InstallError
from core.install import (
    Platform,
    ServiceId,
    ServiceSpec,
    detect_platform,
    install,
    kept_secrets,
    plan_install,
    status,
    under,
    uninstall,
)
from core.secrets import secret_env_names
from core.svcctl import COMMAND_TIMEOUT, run_command
from core.units import Kind

NOT_INSTALLED = 3  # `service status` exit code when nothing is installed (as LSB's "not running")


def _say(line: str) -> None:
    print(line, flush=True)


def clawops_executable() -> str:
    """The venv's ``clawops`` next to this Python, else the one on PATH (absolute either way)."""
    beside = Path(sys.executable).with_name("clawops")
    if beside.is_file():
        return os.path.abspath(beside)
    found = shutil.which("clawops")
    if found:
        return os.path.abspath(found)
    raise InstallError(
        "cannot find the clawops executable (next to this Python, or on PATH): install clawops "
        "with pip first"
    )


def _identity(
    args: argparse.Namespace, writes: bool = True
) -> tuple[ServiceId, str, tuple[int, int] | None]:
    """Which service, for whom: under sudo the agent is installed for SUDO_USER (whose account
    runs the gateways), with its files owned by that account."""
    platform: Platform = detect_platform(sys.platform, args.platform)
    kind: Kind = "agent" if args.agent else "node"
    host = {"darwin": "macos", "linux": "linux"}.get(sys.platform)
    acting = args.prefix is None and not getattr(args, "dry_run", False)
    if acting and platform != host:
        raise InstallError(
            f"--platform {platform} on this {host or sys.platform} host needs --prefix DIR "
            "or --dry-run (its service manager is not here). Nothing was written."
        )
    me = pwd.getpwuid(os.getuid())
    user, home, owner = me.pw_name, Path.home(), None
    sudo_user = os.environ.get("SUDO_USER") if os.geteuid() == 0 else None
    if kind == "agent" and sudo_user and sudo_user != "root":
        try:
            them = pwd.getpwnam(sudo_user)
        except KeyError:
            raise InstallError(f"SUDO_USER names {sudo_user!r}, which is no account here") from None
        user, home, owner = them.pw_name, Path(them.pw_dir), (them.pw_uid, them.pw_gid)
    ident = ServiceId(kind, platform, Path(os.path.abspath(home)), os.getuid())
    if acting and writes and ident.needs_root and os.geteuid() != 0:
        raise InstallError(
            f"the agent is a LaunchDaemon ({ident.unit_path}, the system domain): run with sudo"
        )
    if acting and writes and platform == "macos" and kind == "node" and os.geteuid() == 0:
        raise InstallError("install the node as your own user, without sudo (it is a LaunchAgent)")
    return ident, user, owner


def _node_spec(args: argparse.Namespace, ident: ServiceId) -> tuple[ServiceSpec, dict[str, str]]:
    loaded = load_config(args.config)  # a config that does not validate stops here
    if loaded.path is None:
        raise InstallError(
            "a service needs a config file: pass --config PATH (or set CLAWOPS_CONFIG)"
        )
    config = loaded.config
    config_path = os.path.abspath(loaded.path)
    data_dir = Path(os.path.abspath(loaded.data_dir))
    spec = ServiceSpec(
        id=ident,
        program=(clawops_executable(), "run", "--config", config_path),
        working_dir=Path(config_path).parent,
        log_dir=data_dir / "logs",
        env_file=data_dir / "clawops.env",
        secret_names=tuple(sorted(secret_env_names(config))),
    )
    consequences = {config.telegram.token_env: "the service will run with Telegram off"}
    if config.database.url_env:
        consequences[config.database.url_env] = "the service will refuse to start"
    if config.sidecar.token_env and not config.sidecar.is_loopback:
        consequences[config.sidecar.token_env] = (
            f"the service will refuse to start (its sidecar binds {config.sidecar.host})"
        )
    return spec, consequences


def _agent_spec(
    args: argparse.Namespace, ident: ServiceId, user: str, owner: tuple[int, int] | None
) -> tuple[ServiceSpec, dict[str, str]]:
    from agent.config import load_agent_config

    if not args.config:
        raise InstallError("--agent needs --config PATH: the Mini agent's agent.toml")
    path = Path(os.path.abspath(Path(args.config).expanduser()))
    agent = load_agent_config(path)  # validates; ConfigError lists every problem
    # state_dir as the service's account sees it: "~" is that account's home, not root's.
    raw = tomllib.loads(path.read_text())["agent"].get("state_dir", "~/.clawops-agent")
    state = Path(str(raw))
    if str(raw).startswith("~"):
        state = ident.home / Path(*state.parts[1:])
    elif not state.is_absolute():
        state = path.parent / state  # the service runs in the config's folder
    spec = ServiceSpec(
        id=ident,
        program=(clawops_executable(), "agent", "--config", str(path)),
        working_dir=path.parent,
        log_dir=state / "logs",
        env_file=state / "agent.env",
        secret_names=tuple(sorted(secret_env_names(agent))),
        user=user,
        owner=owner,
        extra_env=(("HOME", str(ident.home)),) if ident.platform == "macos" else (),
    )
    return spec, {agent.token_env: "the agent will refuse to start"}


def cmd_install(args: argparse.Namespace) -> int:
    ident, user, owner = _identity(args)
    if args.agent:
        spec, consequences = _agent_spec(args, ident, user, owner)
    else:
        spec, consequences = _node_spec(args, ident)
    kept = kept_secrets(spec, args.prefix, _say)
    plan = plan_install(spec, os.environ, kept, consequences)  # refuses before any write
    install(
        spec,
        plan,
        prefix=args.prefix,
        dry_run=args.dry_run,
        runner=run_command,
        timeout=args.timeout,
        say=_say,
    )
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    ident, _, _ = _identity(args)
    uninstall(
        ident,
        prefix=args.prefix,
        dry_run=args.dry_run,
        runner=run_command,
        timeout=args.timeout,
        say=_say,
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    ident, _, _ = _identity(args, writes=False)
    for line in status(ident, prefix=args.prefix, runner=run_command, timeout=args.timeout):
        print(line)
    return 0 if under(args.prefix, ident.unit_path).exists() else NOT_INSTALLED


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--agent",
        action="store_true",
        help="the Mini agent (a LaunchDaemon on macOS: needs sudo) instead of the node",
    )
    shared.add_argument(
        "--platform", choices=("macos", "linux"), help="launchd or systemd (default: this host's)"
    )
    shared.add_argument(
        "--prefix",
        metavar="DIR",
        type=Path,
        help="place every file under DIR (DIR/Users/you/Library/...) and run no "
        "launchctl/systemctl: for packaging and tests",
    )
    shared.add_argument(
        "--timeout",
        type=float,
        default=COMMAND_TIMEOUT,
        metavar="SECONDS",
        help=f"bound on each launchctl/systemctl call (default {COMMAND_TIMEOUT:g})",
    )
    dry = argparse.ArgumentParser(add_help=False)
    dry.add_argument(
        "--dry-run",
        action="store_true",
        help="print the files (secrets as ***) and commands; write and run nothing",
    )
    service = sub.add_parser("service", help="run clawops as a launchd/systemd service")
    service_sub = service.add_subparsers(dest="service_command", required=True, metavar="COMMAND")
    install_p = service_sub.add_parser(
        "install",
        parents=[common, shared, dry],
        help="write the plist/unit and a 0600 env file of secrets, then (re)start it",
        description="Secrets the config names are copied from this shell's environment into "
        "an env file of mode 0600 (never into the plist/unit). With --agent, --config is the "
        "agent.toml. Logs: <data dir>/logs (CLAWOPS_LOG_FILE rotates by size).",
    )
    install_p.set_defaults(func=cmd_install)
    uninstall_p = service_sub.add_parser(
        "uninstall",
        parents=[shared, dry],
        help="stop it and remove the plist/unit and env file (logs and data stay)",
    )
    uninstall_p.set_defaults(func=cmd_uninstall)
    status_p = service_sub.add_parser(
        "status",
        parents=[shared],
        help="where it is installed, the env file's mode, the manager's view (exit 3: absent)",
    )
    status_p.set_defaults(func=cmd_status)
