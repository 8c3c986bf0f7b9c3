"""`clawops service install|uninstall|status` as a user runs it: a real `clawops` process, a
temporary HOME and prefix, the plist read back with plistlib and the unit checked by systemd."""

from __future__ import annotations

import os
import plistlib
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from core.envfile import parse_env

_SCRIPT = Path(sys.executable).with_name("clawops")
CLAWOPS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "bot.cli"]
# A secret that needs quoting: a single quote, a dollar, a space, a backslash.
SECRET = "12345678:AAH-q'uo$te d\\x"
AGENT_TOKEN = "a" * 40
ON_LINUX = sys.platform.startswith("linux")
IS_ROOT = os.geteuid() == 0


def clawops(*args: str, home: Path, env: dict[str, str] | None = None):
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLAWOPS_")}
    base.pop("SUDO_USER", None)
    return subprocess.run(
        [*CLAWOPS, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "HOME": str(home), **(env or {})},
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "conf dir" / "clawops.toml"  # a space: quoted in ExecStart
    path.parent.mkdir()
    path.write_text('[node]\nname = "n1"\ndata_dir = "data"\n')
    return path


@pytest.fixture
def agent_config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[agent]\ntoken_env = "CLAWOPS_AGENT_TOKEN"\nstate_dir = "{tmp_path / "agent-state"}"\n'
    )
    return path


def in_prefix(prefix: Path, path: Path) -> Path:
    return prefix / path.relative_to("/")


def data_dir(config: Path) -> Path:
    return config.parent / "data"


def test_install_writes_a_launch_agent_whose_plist_holds_no_secret(home, config, tmp_path):
    prefix = tmp_path / "prefix"
    done = clawops(
        "service",
        "install",
        "--config",
        str(config),
        "--platform",
        "macos",
        "--prefix",
        str(prefix),
        home=home,
        env={"CLAWOPS_TELEGRAM_TOKEN": SECRET},
    )
    assert done.returncode == 0, done.stderr
    assert "not run (--prefix): launchctl bootstrap" in done.stdout
    plist_path = in_prefix(prefix, home / "Library/LaunchAgents/dev.clawops.node.plist")
    raw = plist_path.read_bytes()
    job = plistlib.loads(raw)
    logs = data_dir(config) / "logs"
    assert job["Label"] == "dev.clawops.node"
    assert job["RunAtLoad"] is True
    assert job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["ThrottleInterval"] == 10
    program, *rest = job["ProgramArguments"]
    assert Path(program).resolve() == _SCRIPT.resolve()
    assert rest == ["run", "--config", str(config)]
    assert job["WorkingDirectory"] == str(config.parent)
    assert job["StandardOutPath"] == str(logs / "node.out.log")
    assert job["StandardErrorPath"] == str(logs / "node.err.log")
    env = job["EnvironmentVariables"]
    assert env["CLAWOPS_ENV_FILE"] == str(data_dir(config) / "clawops.env")
    assert env["CLAWOPS_LOG_FILE"] == str(logs / "node.log")
    assert "/opt/homebrew/bin" in env["PATH"].split(":")
    assert SECRET.encode() not in raw and b"AAH-q" not in raw
    assert stat.S_IMODE(plist_path.stat().st_mode) == 0o644
    env_file = in_prefix(prefix, data_dir(config) / "clawops.env")
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert parse_env(env_file.read_text())["CLAWOPS_TELEGRAM_TOKEN"] == SECRET
    assert stat.S_IMODE(in_prefix(prefix, logs).stat().st_mode) == 0o700
    assert "CLAWOPS_SECRET_KEY is not set" in done.stdout


def test_install_writes_a_launch_daemon_for_the_agent_run_by_the_invoking_user(
    home, agent_config, tmp_path
):
    prefix = tmp_path / "prefix"
    sudo = {"SUDO_USER": "nobody"} if IS_ROOT else {}
    user = "nobody" if IS_ROOT else pwd.getpwuid(os.getuid()).pw_name
    done = clawops(
        "service",
        "install",
        "--agent",
        "--config",
        str(agent_config),
        "--platform",
        "macos",
        "--prefix",
        str(prefix),
        home=home,
        env={"CLAWOPS_AGENT_TOKEN": AGENT_TOKEN, **sudo},
    )
    assert done.returncode == 0, done.stderr
    raw = in_prefix(prefix, Path("/Library/LaunchDaemons/dev.clawops.agent.plist")).read_bytes()
    job = plistlib.loads(raw)
    state = tmp_path / "agent-state"
    assert job["Label"] == "dev.clawops.agent"
    assert job["UserName"] == user
    assert job["ProgramArguments"][1:] == ["agent", "--config", str(agent_config)]
    assert job["StandardOutPath"] == str(state / "logs" / "agent.out.log")
    assert job["StandardErrorPath"] == str(state / "logs" / "agent.err.log")
    assert job["EnvironmentVariables"]["CLAWOPS_LOG_FILE"] == str(state / "logs" / "agent.log")
    expected_home = pwd.getpwnam(user).pw_dir if IS_ROOT else str(home)
    assert job["EnvironmentVariables"]["HOME"] == expected_home
    assert AGENT_TOKEN.encode() not in raw
    env_file = in_prefix(prefix, state / "agent.env")
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert env_file.stat().st_uid == pwd.getpwnam(user).pw_uid  # the agent's account reads it
    assert parse_env(env_file.read_text()) == {"CLAWOPS_AGENT_TOKEN": AGENT_TOKEN}


@pytest.mark.skipif(not IS_ROOT, reason="only root can be refused for being root")
def test_the_agent_is_refused_when_it_would_run_its_gateways_as_root(home, agent_config, tmp_path):
    prefix = tmp_path / "prefix"
    done = clawops(
        "service",
        "install",
        "--agent",
        "--config",
        str(agent_config),
        "--platform",
        "macos",
        "--prefix",
        str(prefix),
        home=home,
        env={"CLAWOPS_AGENT_TOKEN": AGENT_TOKEN},
    )
    assert done.returncode == 1
    assert "as root" in done.stderr and "SUDO_USER" in done.stderr
    assert not prefix.exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("kind", ["node", "agent"])
def test_the_systemd_unit_passes_systemd_analyze_verify(kind, home, config, agent_config, tmp_path):
    prefix = tmp_path / "prefix"
    which = (
        ["--agent", "--config", str(agent_config)] if kind == "agent" else ["--config", str(config)]
    )
    done = clawops(
        "service",
        "install",
        *which,
        "--platform",
        "linux",
        "--prefix",
        str(prefix),
        home=home,
        env={"CLAWOPS_TELEGRAM_TOKEN": SECRET, "CLAWOPS_AGENT_TOKEN": AGENT_TOKEN},
    )
    assert done.returncode == 0, done.stderr
    name = "clawops.service" if kind == "node" else "clawops-agent.service"
    unit = in_prefix(prefix, home / ".config/systemd/user" / name)
    text = unit.read_text()
    assert "Restart=on-failure" in text and "RestartSec=5" in text
    # The node reloads its config on SIGHUP; the agent does not handle it.
    assert ("ExecReload=/bin/kill -HUP $MAINPID" in text) == (kind == "node")
    assert "WantedBy=default.target" in text and "Type=simple" in text
    assert f"EnvironmentFile={tmp_path}" in text
    log_line = 'Environment="CLAWOPS_LOG_FILE=/' if kind == "node" else "Environment=CLAWOPS_LOG"
    assert log_line in text  # the node's path has a space: quoted
    assert SECRET not in text and AGENT_TOKEN not in text and "AAH-q" not in text
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr


def test_a_dry_run_writes_nothing_and_masks_the_secrets(home, config, tmp_path):
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    for platform in ("macos", "linux"):
        done = clawops(
            "service",
            "install",
            "--config",
            str(config),
            "--platform",
            platform,
            "--dry-run",
            home=home,
            env={"CLAWOPS_TELEGRAM_TOKEN": SECRET},
        )
        assert done.returncode == 0, done.stderr
        assert "CLAWOPS_TELEGRAM_TOKEN='***'" in done.stdout
        assert "AAH-q" not in done.stdout + done.stderr
        assert "would run: " in done.stdout and "would write " in done.stdout
    done = clawops(
        "service",
        "install",
        "--config",
        str(config),
        "--platform",
        "macos",
        "--dry-run",
        "--prefix",
        str(prefix),
        home=home,
        env={"CLAWOPS_TELEGRAM_TOKEN": SECRET},
    )
    assert done.returncode == 0, done.stderr
    assert list(prefix.iterdir()) == []
    assert not data_dir(config).exists() and list(home.iterdir()) == []


def test_a_secret_with_a_line_break_is_refused_and_nothing_is_written(home, config, tmp_path):
    prefix = tmp_path / "prefix"
    done = clawops(
        "service",
        "install",
        "--config",
        str(config),
        "--platform",
        "linux",
        "--prefix",
        str(prefix),
        home=home,
        env={"CLAWOPS_TELEGRAM_TOKEN": "abc\ndef-secret"},
    )
    assert done.returncode == 1
    assert "CLAWOPS_TELEGRAM_TOKEN holds a line break" in done.stderr
    assert "def-secret" not in done.stderr + done.stdout
    assert not prefix.exists()


def test_an_existing_env_file_others_can_read_is_replaced_by_a_private_one(home, config, tmp_path):
    prefix = tmp_path / "prefix"
    env_file = in_prefix(prefix, data_dir(config) / "clawops.env")
    env_file.parent.mkdir(parents=True)
    env_file.write_text("CLAWOPS_TELEGRAM_TOKEN='kept-from-before'\n")
    os.chmod(env_file, 0o644)
    done = clawops(
        "service",
        "install",
        "--config",
        str(config),
        "--platform",
        "linux",
        "--prefix",
        str(prefix),
        home=home,
    )
    assert done.returncode == 0, done.stderr
    assert "was mode 0644" in done.stdout and "rotate" in done.stdout
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    # Not set in this shell: the installed value is kept, not dropped.
    assert parse_env(env_file.read_text()) == {"CLAWOPS_TELEGRAM_TOKEN": "kept-from-before"}
    assert "CLAWOPS_TELEGRAM_TOKEN is not set here: kept its value" in done.stdout


def test_a_config_that_does_not_validate_refuses_install_and_writes_nothing(home, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nname = "n1"\nrole = "boss"\n')
    prefix = tmp_path / "prefix"
    done = clawops(
        "service",
        "install",
        "--config",
        str(bad),
        "--platform",
        "linux",
        "--prefix",
        str(prefix),
        home=home,
    )
    assert done.returncode == 1
    assert "config invalid" in done.stderr and "node.role" in done.stderr
    assert not prefix.exists()


def test_another_platform_than_the_host_needs_a_prefix_or_a_dry_run(home, config):
    other = "linux" if sys.platform == "darwin" else "macos"
    done = clawops("service", "install", "--config", str(config), "--platform", other, home=home)
    assert done.returncode == 1
    assert "needs --prefix DIR or --dry-run" in done.stderr
    assert not data_dir(config).exists() and list(home.iterdir()) == []


def test_uninstall_removes_the_unit_and_env_file_keeps_the_logs_and_is_idempotent(
    home, config, tmp_path
):
    prefix = tmp_path / "prefix"
    where = ("--platform", "macos", "--prefix", str(prefix))
    assert clawops("service", "install", "--config", str(config), *where, home=home).returncode == 0
    logs = in_prefix(prefix, data_dir(config) / "logs")
    (logs / "node.log").write_text("kept\n")
    installed = clawops("service", "status", *where, home=home)
    assert installed.returncode == 0 and "installed at" in installed.stdout
    assert "mode 0600" in installed.stdout
    gone = clawops("service", "uninstall", *where, home=home)
    assert gone.returncode == 0, gone.stderr
    assert "not run (--prefix): launchctl bootout" in gone.stdout
    assert not in_prefix(prefix, home / "Library/LaunchAgents/dev.clawops.node.plist").exists()
    assert not in_prefix(prefix, data_dir(config) / "clawops.env").exists()
    assert (logs / "node.log").read_text() == "kept\n"
    again = clawops("service", "uninstall", *where, home=home)
    assert again.returncode == 0 and "not installed" in again.stdout
    absent = clawops("service", "status", *where, home=home)
    assert absent.returncode == 3 and "not installed" in absent.stdout


def test_status_warns_when_the_env_file_is_readable_by_others(home, config, tmp_path):
    prefix = tmp_path / "prefix"
    where = ("--platform", "linux", "--prefix", str(prefix))
    assert clawops("service", "install", "--config", str(config), *where, home=home).returncode == 0
    os.chmod(in_prefix(prefix, data_dir(config) / "clawops.env"), 0o644)
    done = clawops("service", "status", *where, home=home)
    assert done.returncode == 0
    assert "warning:" in done.stdout and "mode 0644" in done.stdout and "chmod 600" in done.stdout


def fake_manager(tmp_path: Path, script: str) -> dict[str, str]:
    """A PATH whose `systemctl` is ``script``: the manager misbehaving on purpose."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "systemctl"
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.skipif(not ON_LINUX, reason="runs the host's (fake) systemctl")
def test_a_failing_systemctl_is_reported_with_its_stderr_and_the_files_stay(home, config, tmp_path):
    path = fake_manager(tmp_path, 'echo "Failed to connect to bus: No medium found" >&2; exit 1')
    done = clawops("service", "install", "--config", str(config), home=home, env=path)
    assert done.returncode == 1
    assert "`systemctl --user daemon-reload` failed (exit 1)" in done.stderr
    assert "Failed to connect to bus" in done.stderr and "the files written stay" in done.stderr
    assert (home / ".config/systemd/user/clawops.service").is_file()
    assert (data_dir(config) / "clawops.env").is_file()


@pytest.mark.skipif(not ON_LINUX, reason="runs the host's (fake) systemctl")
def test_a_systemctl_that_never_answers_is_killed_after_the_timeout(home, config, tmp_path):
    path = fake_manager(tmp_path, "sleep 60 & wait")  # a child too: the group is killed
    done = clawops(
        "service", "install", "--config", str(config), "--timeout", "0.3", home=home, env=path
    )
    assert done.returncode == 1
    assert "`systemctl --user daemon-reload` timed out: no answer within 0.3 s" in done.stderr
    status = clawops("service", "status", "--timeout", "0.3", home=home, env=path)
    assert "installed at" in status.stdout and "no answer within 0.3 s" in status.stdout


def node_env_file(tmp_path: Path, text: str, mode: int = 0o600) -> dict[str, str]:
    env_file = tmp_path / "node.env"
    env_file.write_text(text)
    env_file.chmod(mode)
    return {"CLAWOPS_ENV_FILE": str(env_file)}


def test_check_config_loads_the_env_file_clawops_env_file_names(home, config, tmp_path):
    without = clawops("check-config", "--config", str(config), home=home)
    assert "CLAWOPS_TELEGRAM_TOKEN is not set" in without.stdout
    env = node_env_file(tmp_path, f"# the node's secrets\nCLAWOPS_TELEGRAM_TOKEN='{'x' * 40}'\n")
    done = clawops("check-config", "--config", str(config), home=home, env=env)
    assert done.returncode == 0, done.stderr
    assert "CLAWOPS_TELEGRAM_TOKEN is not set" not in done.stdout


def test_check_config_refuses_an_env_file_others_can_read(home, config, tmp_path):
    env = node_env_file(tmp_path, "CLAWOPS_TELEGRAM_TOKEN='hidden-value'\n", mode=0o644)
    done = clawops("check-config", "--config", str(config), home=home, env=env)
    assert done.returncode == 1
    assert "mode 0644" in done.stderr and "chmod 600" in done.stderr
    assert "hidden-value" not in done.stderr + done.stdout


def test_a_malformed_env_file_is_refused_naming_the_line_never_the_value(home, config, tmp_path):
    env = node_env_file(tmp_path, "# ok\nA='fine'\nthis-is-a-pasted-secret\nB='unterminated\n")
    done = clawops("check-config", "--config", str(config), home=home, env=env)
    assert done.returncode == 1
    assert "line 3: not NAME=VALUE" in done.stderr and "line 4:" in done.stderr
    assert "pasted-secret" not in done.stderr and "unterminated" not in done.stderr


def test_a_missing_env_file_is_refused(home, config, tmp_path):
    env = {"CLAWOPS_ENV_FILE": str(tmp_path / "nowhere.env")}
    done = clawops("check-config", "--config", str(config), home=home, env=env)
    assert done.returncode == 1 and "does not exist" in done.stderr


def test_an_open_sidecar_without_its_token_set_is_warned_as_a_service_that_will_not_start(
    home, tmp_path
):
    config = tmp_path / "open.toml"
    config.write_text(
        '[node]\nname = "n1"\ndata_dir = "data"\n'
        '[sidecar]\nhost = "0.0.0.0"\ntoken_env = "OPEN_SIDECAR_TOKEN"\n'
    )
    done = clawops(
        "service", "install", "--config", str(config), "--platform", "linux", "--dry-run", home=home
    )
    assert done.returncode == 0, done.stderr
    assert (
        "OPEN_SIDECAR_TOKEN is not set: the service will refuse to start (its sidecar binds "
        "0.0.0.0)" in done.stdout + done.stderr
    )
