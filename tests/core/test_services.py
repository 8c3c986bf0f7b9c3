"""Service managers: PM2 for real (from npm), the macOS/Windows/systemd parsers on fixtures."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from pathlib import Path

import pytest

from core.config import MachineConfig, ServiceConfig
from core.errors import InputError, NotFound, RemoteError
from core.executors import LocalExecutor, SSHExecutor
from core.services import ServiceManager, check_name, manager_for
from core.services._logs import TAIL_BYTES
from core.services.launchd import parse_list, parse_print_paths
from core.services.pm2 import parse_jlist
from core.services.systemd import format_journal, parse_show
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
    manager = manager_for(service("gateway", "windows"), LocalExecutor(LOCAL))
    with pytest.raises(InputError, match="log_path"):
        await manager.logs(10)


async def test_logs_tail_the_configured_files_each_under_its_name(tmp_path):
    log, errors = tmp_path / "ollama.log", tmp_path / "ollama.err"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    errors.write_text("panic: out of memory\n")
    svc = service("ollama", "process", log_path=str(log), error_log_path=str(errors))
    logs = await manager_for(svc, LocalExecutor(LOCAL)).logs(3)
    assert [(s.name, s.source) for s in logs.streams] == [
        ("log", str(log)),
        ("error log", str(errors)),
    ]
    assert logs.text_of("log").splitlines() == ["line 97", "line 98", "line 99"]
    assert logs.render() == (
        f"── log ({log}) ──\nline 97\nline 98\nline 99\n"
        f"── error log ({errors}) ──\npanic: out of memory\n"
    )
    with pytest.raises(InputError):
        await manager_for(svc, LocalExecutor(LOCAL)).logs(0)


async def test_a_log_file_that_cannot_be_read_is_named_in_its_section(tmp_path):
    log = tmp_path / "ollama.log"
    log.write_text("started\n")
    svc = service("ollama", "process", log_path=str(log), error_log_path=str(tmp_path / "gone"))
    logs = await manager_for(svc, LocalExecutor(LOCAL)).logs(5)
    assert logs.text_of("log") == "started"
    assert "(cannot read it: tail: cannot open" in logs.render()
    assert "No such file or directory" in logs.render()


async def test_a_huge_line_is_cut_to_the_last_bytes_and_said_so(tmp_path):
    log = tmp_path / "dump.log"
    log.write_text("x" * (TAIL_BYTES * 2) + "\nthe end\n")
    logs = await manager_for(service("d", "process", log_path=str(log)), LocalExecutor(LOCAL)).logs(
        10
    )
    (stream,) = logs.streams
    assert stream.text == "the end" and stream.cut
    assert f"only the last {TAIL_BYTES // 1024} KiB" in logs.render()


def test_launchctl_print_paths_come_from_the_job_not_from_nested_blocks():
    printed = fixture("launchctl-print-gateway.txt").replace("@OUT@", "/o.log")
    assert parse_print_paths(printed.replace("@ERR@", "/e.log")) == {
        "stdout": "/o.log",
        "stderr": "/e.log",
    }
    no_stderr = "".join(line for line in printed.splitlines(True) if "@ERR@" not in line)
    assert parse_print_paths(no_stderr) == {"stdout": "/o.log"}


def launchd_job(tools: Path, tmp_path: Path, out: str, err: str) -> None:
    """A stand-in launchctl whose `print` shows the job with these stdout/stderr paths."""
    printed = tmp_path / "printed.txt"
    text = fixture("launchctl-print-gateway.txt").replace("@OUT@", out).replace("@ERR@", err)
    printed.write_text(text)
    stand_in(tools, "launchctl", f"cat {printed}")
    stand_in(tools, "id", "echo 501")


async def test_launchd_logs_tail_the_jobs_stdout_and_stderr_files(tools, tmp_path):
    out, err = tmp_path / "gateway.log", tmp_path / "gateway.err.log"
    out.write_text("gateway listening on 18789\n")
    err.write_text("Error: EADDRINUSE 18789\n    at Server.listen\n")
    launchd_job(tools, tmp_path, str(out), str(err))
    svc = service("gateway", "launchd", unit="com.clawdbot.gateway")
    logs = await manager_for(svc, LocalExecutor(LOCAL)).logs(20)
    assert calls(tools)[-1] == "print gui/501/com.clawdbot.gateway"
    assert logs.render() == (
        f"── stdout ({out}) ──\ngateway listening on 18789\n"
        f"── stderr ({err}) ──\nError: EADDRINUSE 18789\n    at Server.listen\n"
    )


async def test_launchd_log_path_overrides_the_jobs_stdout_and_one_file_is_shown_once(
    tools, tmp_path
):
    both, mine = tmp_path / "both.log", tmp_path / "mine.log"
    both.write_text("out and err together\n")
    mine.write_text("from the config\n")
    launchd_job(tools, tmp_path, str(both), str(both))
    plain = service("gateway", "launchd", unit="com.clawdbot.gateway")
    logs = await manager_for(plain, LocalExecutor(LOCAL)).logs(5)
    assert [(s.name, s.text) for s in logs.streams] == [("stdout+stderr", "out and err together")]
    overridden = service("gateway", "launchd", unit="com.clawdbot.gateway", log_path=str(mine))
    logs = await manager_for(overridden, LocalExecutor(LOCAL)).logs(5)
    assert [(s.name, s.text) for s in logs.streams] == [
        ("stdout", "from the config"),
        ("stderr", "out and err together"),
    ]


async def test_launchd_logs_of_a_job_that_is_not_loaded_need_a_log_path(tools, tmp_path):
    stand_in(tools, "launchctl", 'echo "Could not find service" >&2; exit 113')
    stand_in(tools, "id", "echo 501")
    with pytest.raises(InputError, match=r"not loaded.*set log_path"):
        await manager_for(service("g", "launchd"), LocalExecutor(LOCAL)).logs(5)
    log = tmp_path / "g.log"
    log.write_text("last words\n")
    logs = await manager_for(service("g", "launchd", log_path=str(log)), LocalExecutor(LOCAL)).logs(
        5
    )
    assert [(s.name, s.text) for s in logs.streams] == [("stdout", "last words")]


async def test_systemd_logs_read_the_journal_and_mark_error_lines(tools):
    stand_in(tools, "journalctl", f"cat {FIXTURES / 'journalctl-json.txt'}")
    logs = await manager_for(service("web", "systemd"), LocalExecutor(LOCAL)).logs(5)
    assert calls(tools)[-1] == (
        "-u web -n 5 --no-pager -o json --output-fields=MESSAGE,PRIORITY,SYSLOG_IDENTIFIER,_PID"
    )
    assert logs.render() == (
        "── journal (journalctl -u web) ──\n"
        "2025-12-03T12:00:01Z web[812]: listening on :8080\n"
        "2025-12-03T12:00:02Z web[812]: [err] database unreachable: connection refused\n"
        "2025-12-03T12:00:02Z web[812]: caf\ufffd( bytes\n"
        "2025-12-03T12:00:02Z systemd[1]: web.service: Main process exited, code=exited, "
        "status=1/FAILURE\n"
        "2025-12-03T12:00:02Z systemd[1]: [warning] web.service: Failed with result 'exit-code'.\n"
    )


def test_journal_lines_that_are_not_json_are_kept_as_they_are():
    assert format_journal('-- No entries --\n{"MESSAGE": "m", "PRIORITY": "2"}\n\n') == (
        "-- No entries --\n? ?: [err] m"
    )


async def test_windows_logs_read_the_configured_files_through_powershell(tools):
    stand_in(tools, "powershell", "echo 'Bot started'")
    paths = {"log_path": "C:/bot/it's.log", "error_log_path": "C:/bot/err.log"}
    svc = service("bot", "windows", unit="ClawdbotBot", **paths)
    logs = await manager_for(svc, executor_on("windows")).logs(20)
    assert [(s.name, s.source, s.text) for s in logs.streams] == [
        ("log", "C:/bot/it's.log", "Bot started"),
        ("error log", "C:/bot/err.log", "Bot started"),
    ]
    assert sorted(c.split("-Command ", 1)[1] for c in calls(tools)) == [
        "Get-Content -LiteralPath 'C:/bot/err.log' -Tail 20 -ErrorAction Stop",
        "Get-Content -LiteralPath 'C:/bot/it''s.log' -Tail 20 -ErrorAction Stop",
    ]


def executor_on(os_name: str) -> LocalExecutor:
    """This machine's executor, for a manager that picks its commands by the machine's OS."""
    return LocalExecutor(MachineConfig(name="here", os=os_name, address="127.0.0.1", local=True))


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
    assert "aphos listening" in (await logs_showing(manager, "stdout", "aphos listening"))
    missing = await manager_for(service("nope", "pm2"), LocalExecutor(LOCAL)).status()
    assert missing.state == "stopped" and "not in" in missing.detail


async def logs_showing(manager: ServiceManager, stream: str, text: str, wait: float = 20) -> str:
    """The stream's tail once it shows ``text`` (PM2 writes its log files asynchronously)."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        tail = (await manager.logs(50)).text_of(stream)
        if text in tail or asyncio.get_running_loop().time() > deadline:
            return tail
        await asyncio.sleep(0.1)


CRASHER = """console.log('crasher starting');
console.error('boom: cannot open the database');
process.exit(3);
"""


async def start_crasher(tmp_path: Path, name: str = "crasher") -> None:
    """A PM2 process that writes to stdout and stderr, then exits 3 (not restarted)."""
    app = tmp_path / f"{name}.js"
    app.write_text(CRASHER)
    result = await LocalExecutor(LOCAL).run(
        ["pm2", "start", str(app), "--name", name, "--no-autorestart"], timeout=60
    )
    assert result.ok, result.stderr


@needs_pm2
async def test_pm2_logs_of_a_crashed_process_show_stdout_and_stderr_without_the_banner(
    pm2, tmp_path
):
    await start_crasher(tmp_path)
    manager = manager_for(service("crasher", "pm2"), LocalExecutor(LOCAL))
    assert "boom" in await logs_showing(manager, "stderr", "boom: cannot open the database")
    assert (await manager.status()).state == "stopped"
    logs = await manager.logs(20)
    assert [s.name for s in logs.streams] == ["stdout", "stderr"]
    out, err = logs.streams
    assert out.source.endswith("crasher-out.log") and err.source.endswith("crasher-error.log")
    assert out.text == "crasher starting" and err.text == "boom: cannot open the database"
    text = logs.render()
    assert f"── stdout ({out.source}) ──\ncrasher starting\n" in text
    assert f"── stderr ({err.source}) ──\nboom: cannot open the database\n" in text
    assert "[TAILING]" not in text and "PM2" not in text


@needs_pm2
async def test_pm2_logs_of_a_process_pm2_does_not_know_say_so(pm2):
    manager = manager_for(service("nope", "pm2"), LocalExecutor(LOCAL))
    with pytest.raises(NotFound, match="nope is not in pm2's process list"):
        await manager.logs(5)


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
        manager = manager_for(svc, executor)
        status = await manager.status()
        assert status.state == "running" and status.machine == "mini"
        assert any(c.startswith("pm2 jlist") for c in server.commands)
        assert "aphos listening" in await logs_showing(manager, "stdout", "aphos listening")
        assert any(c.startswith(f"tail -c {TAIL_BYTES} ") for c in server.commands)
    finally:
        await executor.close()
        await server.close()
