"""Service managers: PM2 for real (from npm), the macOS/Windows/systemd parsers on fixtures."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from pathlib import Path

import pytest

from core.config import MachineConfig, ServiceConfig
from core.errors import InputError, RemoteError
from core.executors import LocalExecutor, SSHExecutor
from core.services import check_name, manager_for
from core.services.launchd import parse_list
from core.services.pm2 import parse_jlist
from core.services.systemd import parse_show
from core.services.windows import parse_service_json
from tests.auxil.sshd import start_sshd
from tests.conftest import PM2_BIN

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "services"
LOCAL = MachineConfig(name="here", os="linux", address="127.0.0.1", local=True)

needs_pm2 = pytest.mark.skipif(
    not (PM2_BIN / "pm2").exists() or shutil.which("node") is None,
    reason="PM2 is not installed (scripts/setup installs it with npm into .tools/)",
)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def service(name: str, manager: str, **extra) -> ServiceConfig:
    return ServiceConfig(name=name, machine="here", manager=manager, **extra)


# -- parsers on recorded formats ---------------------------------------------------------------


def test_launchctl_list_output_is_parsed():
    running = parse_list(fixture("launchctl-list-running.txt"))
    assert running["PID"] == "48213" and running["Label"] == "com.clawdbot.gateway"
    assert "PID" not in parse_list(fixture("launchctl-list-crashed.txt"))


def test_systemctl_show_output_is_parsed():
    fields = parse_show(fixture("systemctl-show-failed.txt"))
    assert fields["ActiveState"] == "failed" and fields["NRestarts"] == "5"


def test_get_service_json_is_parsed():
    assert parse_service_json(fixture("get-service-running.json")) == ("running", "4")
    assert parse_service_json(fixture("get-service-stopped.json")) == ("stopped", "1")


def test_pm2_warnings_before_the_json_are_skipped():
    output = "[PM2] Spawning PM2 daemon\n" + '[{"name": "a", "pm2_env": {"status": "online"}}]'
    assert parse_jlist(output)[0]["name"] == "a"


@pytest.mark.parametrize("bad", ["gateway; rm -rf /", "$(id)", "a b", "", "-rf", "x" * 200])
def test_names_a_shell_would_act_on_are_refused(bad):
    with pytest.raises(InputError):
        check_name(bad)


# -- managers run through a real executor against stand-in tools ---------------------------------


def stand_in(bin_dir: Path, name: str, script: str) -> None:
    """A program on PATH that records its argv and answers like the real tool."""
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\necho "$0 $*" >> {bin_dir}/calls.log\n{script}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def tools(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def calls(bin_dir: Path) -> list[str]:
    log = bin_dir / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split(" ", 1)[1] if " " in line else "" for line in lines]


async def test_launchd_status_reads_pid_crash_and_signal(tools):
    for name, expected in (
        ("launchctl-list-running.txt", ("running", 48213, "")),
        ("launchctl-list-crashed.txt", ("failed", None, "exited with 1")),
        ("launchctl-list-killed.txt", ("failed", None, "killed by signal 9")),
    ):
        stand_in(tools, "launchctl", f"cat {FIXTURES / name}")
        status = await manager_for(service("gateway", "launchd", unit="com.clawdbot.gateway"),
                                   LocalExecutor(LOCAL)).status()  # fmt: skip
        assert (status.state, status.pid, status.detail) == expected


async def test_launchd_reports_an_unloaded_agent_as_stopped(tools):
    stand_in(tools, "launchctl", 'echo "Could not find service" >&2; exit 113')
    status = await manager_for(service("g", "launchd"), LocalExecutor(LOCAL)).status()
    assert (status.state, status.detail) == ("stopped", "not loaded")


async def test_launchd_restart_kickstarts_the_agent_in_the_users_gui_domain(tools):
    stand_in(tools, "launchctl", "exit 0")
    stand_in(tools, "id", "echo 501")
    manager = manager_for(service("gateway", "launchd", unit="com.clawdbot.gateway"),
                          LocalExecutor(LOCAL))  # fmt: skip
    await manager.restart()
    daemon = service("ollama", "launchd", unit="homebrew.mxcl.ollama",
                     launchd_domain="daemon", sudo=True)  # fmt: skip
    stand_in(tools, "sudo", 'shift; exec "$@"')
    await manager_for(daemon, LocalExecutor(LOCAL)).restart()
    assert calls(tools)[-4:] == [
        "-u", "kickstart -k gui/501/com.clawdbot.gateway",
        "-n launchctl kickstart -k system/homebrew.mxcl.ollama",
        "kickstart -k system/homebrew.mxcl.ollama",
    ]  # fmt: skip


async def test_systemd_status_maps_states(tools):
    stand_in(tools, "systemctl", f"cat {FIXTURES / 'systemctl-show-active.txt'}")
    status = await manager_for(service("web", "systemd"), LocalExecutor(LOCAL)).status()
    assert (status.state, status.pid, status.restarts) == ("running", 812, 2)
    stand_in(tools, "systemctl", f"cat {FIXTURES / 'systemctl-show-failed.txt'}")
    status = await manager_for(service("web", "systemd"), LocalExecutor(LOCAL)).status()
    assert status.state == "failed" and "exit-code" in status.detail


async def test_a_failing_management_command_is_a_remote_error_with_its_reason(tools):
    stand_in(
        tools, "powershell", "echo \"Cannot find any service with service name 'x'.\" >&2; exit 1"
    )
    manager = manager_for(service("x", "windows"), LocalExecutor(LOCAL))
    with pytest.raises(RemoteError, match="Cannot find any service"):
        await manager.restart()
    assert "Restart-Service -Name 'x' -ErrorAction Stop" in calls(tools)[-1]


async def test_logs_need_a_log_path_for_managers_without_a_log_command():
    manager = manager_for(service("gateway", "launchd"), LocalExecutor(LOCAL))
    with pytest.raises(InputError, match="log_path"):
        await manager.logs(10)


async def test_logs_tail_the_configured_file(tmp_path):
    log = tmp_path / "gateway.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    manager = manager_for(service("gateway", "launchd", log_path=str(log)), LocalExecutor(LOCAL))
    assert (await manager.logs(3)).splitlines() == ["line 97", "line 98", "line 99"]
    with pytest.raises(InputError):
        await manager.logs(0)


# -- PM2, for real ---------------------------------------------------------------------------


@needs_pm2
async def test_pm2_status_restart_stop_start_and_logs(pm2):
    manager = manager_for(service("aphos-server-dev", "pm2"), LocalExecutor(LOCAL))
    status = await manager.status()
    assert status.state == "running" and status.pid and status.restarts == 0
    await manager.restart()
    after = await manager.status()
    assert after.state == "running" and after.restarts == 1 and after.pid != status.pid
    await manager.stop()
    assert (await manager.status()).state == "stopped"
    await manager.start()
    assert (await manager.status()).state == "running"
    await asyncio.sleep(0.5)
    assert "aphos listening" in await manager.logs(20)
    missing = await manager_for(service("nope", "pm2"), LocalExecutor(LOCAL)).status()
    assert missing.state == "stopped" and "not in" in missing.detail


@needs_pm2
async def test_pm2_over_ssh(pm2, tmp_path):
    server = await start_sshd(tmp_path)
    machine = MachineConfig(
        name="mini", os="linux", address="127.0.0.1",
        ssh={"host": server.host, "port": server.port, "key": str(server.client_key),
             "known_hosts": str(server.known_hosts)},
    )  # fmt: skip
    executor = SSHExecutor(machine)
    try:
        svc = ServiceConfig(name="aphos-server-dev", machine="mini", manager="pm2")
        status = await manager_for(svc, executor).status()
        assert status.state == "running" and status.machine == "mini"
        assert any(c.startswith("pm2 jlist") for c in server.commands)
    finally:
        await executor.close()
        await server.close()
