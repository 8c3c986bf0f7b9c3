"""Executors against real parts: local subprocesses, an SSH server on loopback, a SOCKS5 hop."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from core.config import MachineConfig, parse_config
from core.errors import RemoteError, Unreachable
from core.executors import LocalExecutor, SSHExecutor, quote
from core.fleet import Fleet
from tests.auxil.net import free_port
from tests.auxil.socks import Socks5Server
from tests.auxil.sshd import SSHServer, start_sshd


@pytest.fixture
async def sshd(tmp_path):
    server = await start_sshd(tmp_path)
    yield server
    await server.close()


def remote(server: SSHServer, **overrides) -> MachineConfig:
    ssh = {
        "host": server.host, "port": server.port, "user": server.user,
        "key": str(server.client_key), "known_hosts": str(server.known_hosts),
    }  # fmt: skip
    ssh.update(overrides.pop("ssh", {}))
    return MachineConfig(
        name="mini", os="linux", address=server.host, ssh=ssh, **{"timeout": "5s", **overrides}
    )


LOCAL = MachineConfig(name="here", os="linux", address="127.0.0.1", local=True)


async def test_a_local_command_runs_without_a_shell():
    result = await LocalExecutor(LOCAL).run(["echo", "$HOME; rm -rf /"])
    assert result.ok and result.stdout == "$HOME; rm -rf /\n"


async def test_a_local_command_past_its_timeout_is_killed_with_its_children():
    started = time.monotonic()
    result = await LocalExecutor(LOCAL).run(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.5)
    assert result.timed_out and time.monotonic() - started < 5


async def test_a_missing_local_program_is_exit_127():
    result = await LocalExecutor(LOCAL).run(["no-such-program-here"])
    assert result.exit_status == 127 and "not found" in result.stderr


async def test_a_remote_command_runs_and_its_words_arrive_intact(sshd):
    executor = SSHExecutor(remote(sshd))
    try:
        tricky = 'it\'s $(whoami); `id` && echo "pwned" | cat'
        result = await executor.run(["printf", "%s|", tricky, "two words"])
        assert result.ok, result.stderr
        assert result.stdout == f"{tricky}|two words|"
        failing = await executor.run(["sh", "-c", "echo oops >&2; exit 3"])
        assert (failing.exit_status, failing.stderr) == (3, "oops\n")
        with_input = await executor.run(["wc", "-l"], stdin="a\nb\nc\n")
        assert with_input.stdout.strip() == "3"
    finally:
        await executor.close()


async def test_the_ssh_connection_is_pooled_and_reopened_after_a_drop(sshd):
    executor = SSHExecutor(remote(sshd))
    try:
        await executor.run(["true"])
        first = executor._conn
        await executor.run(["true"])
        assert executor._conn is first
        assert first is not None
        first.abort()  # the link drops
        await asyncio.sleep(0.1)
        result = await executor.run(["echo", "back"])
        assert result.stdout == "back\n" and executor._conn is not first
    finally:
        await executor.close()


async def test_a_remote_command_past_its_timeout_is_reported_not_waited_for(sshd):
    executor = SSHExecutor(remote(sshd))
    try:
        started = time.monotonic()
        result = await executor.run(["sleep", "30"], timeout=0.5)
        assert result.timed_out and time.monotonic() - started < 5
    finally:
        await executor.close()


async def test_an_unknown_host_key_is_refused(sshd, tmp_path):
    other = tmp_path / "other_known_hosts"
    other.write_text("")
    executor = SSHExecutor(remote(sshd, ssh={"known_hosts": str(other)}))
    with pytest.raises(RemoteError, match="host key"):
        await executor.run(["true"])


async def test_an_unreachable_machine_fails_fast_and_says_so():
    machine = MachineConfig(
        name="gone", os="linux", address="127.0.0.1", timeout="1s",
        ssh={"host": "127.0.0.1", "port": free_port()},
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(Unreachable, match="gone"):
        await SSHExecutor(machine).run(["true"])
    assert time.monotonic() - started < 3


async def test_ssh_through_a_socks5_proxy_reaches_the_machine(sshd):
    proxy = Socks5Server()
    await proxy.start()
    executor = SSHExecutor(remote(sshd, socks_proxy=proxy.address))
    try:
        result = await executor.run(["echo", "via socks"])
        assert result.stdout == "via socks\n"
        assert proxy.connects == [(sshd.host, sshd.port)]
    finally:
        await executor.close()
        await proxy.close()


async def test_a_socks5_proxy_that_cannot_connect_is_unreachable(sshd):
    proxy = Socks5Server()
    await proxy.start()
    machine = remote(sshd, socks_proxy=proxy.address, ssh={"port": free_port()})
    try:
        with pytest.raises(Unreachable, match="connection refused"):
            await SSHExecutor(machine).run(["true"])
    finally:
        await proxy.close()


def test_windows_command_lines_use_the_c_runtime_quoting_rules():
    assert quote(["Get-Service", "my svc", 'a"b'], "windows") == 'Get-Service "my svc" a\\"b'
    assert quote(["echo", "it's"], "macos") == "echo 'it'\"'\"'s'"


ENV_LINE = (
    "import os; e = os.environ; print(e.get('MY_SECRET'), e.get('CLAWOPS_THING'), 'PATH' in e)"
)


async def test_a_local_command_inherits_neither_the_config_secrets_nor_clawops_variables(
    monkeypatch,
):
    monkeypatch.setenv("MY_SECRET", "hunter2-hunter2")
    monkeypatch.setenv("CLAWOPS_THING", "node-only")
    executor = LocalExecutor(LOCAL, frozenset({"MY_SECRET"}))
    result = await executor.run([sys.executable, "-c", ENV_LINE])
    assert result.stdout.split() == ["None", "None", "True"]
    allowed = await executor.run([sys.executable, "-c", ENV_LINE], allow_env=["MY_SECRET"])
    assert allowed.stdout.split() == ["hunter2-hunter2", "None", "True"]


async def test_the_fleet_gives_local_executors_every_variable_the_config_names(monkeypatch):
    monkeypatch.setenv("DB_URL_FOR_TEST", "postgresql://u:pw@h/db")
    config = parse_config(
        {
            "machines": [{"name": "here", "os": "linux", "address": "127.0.0.1", "local": True}],
            "database": {"url_env": "DB_URL_FOR_TEST"},
        }
    )
    fleet = Fleet(config)
    script = "import os; print(os.environ.get('DB_URL_FOR_TEST'))"
    result = await fleet.executor("here").run([sys.executable, "-c", script])
    assert result.stdout.strip() == "None"
