"""Ports: real listeners on this machine (ss and lsof), Windows JSON, conflicts, ending one."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from core.config import Config, parse_config
from core.errors import InputError
from core.executors import LocalExecutor
from core.ports import (
    Listener,
    Owners,
    conflicts,
    end_listener,
    holders,
    listeners,
    parse_listeners,
    parse_lsof,
    service_owners,
)
from tests.auxil.net import free_port
from tests.auxil.pm2apps import start_python_server
from tests.core.test_services import needs_pm2

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"
HERE = parse_config(
    {"machines": [{"name": "here", "os": "linux", "address": "127.0.0.1", "local": True}]}
).machines[0]

LISTEN = "import socket,sys,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('up', flush=True); time.sleep(60)"  # noqa: E501


async def start_listener(port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LISTEN, str(port), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert await proc.stdout.readline() == b"up\n"
    return proc


@pytest.fixture
async def listener():
    port = free_port()
    proc = await start_listener(port)
    yield port, proc
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def test_listeners_on_linux_come_from_ss_with_their_pid(listener):
    port, proc = listener
    found = await listeners(HERE, LocalExecutor(HERE))
    (mine,) = holders(found, port)
    assert mine.pid == proc.pid and mine.process.startswith("python")


async def test_lsof_field_output_is_parsed_too(listener):
    port, proc = listener
    result = await LocalExecutor(HERE).run(["lsof", "-nP", "-iTCP", "-sTCP:LISTEN", "-F", "pcn"])
    if result.exit_status == 127:
        pytest.skip("lsof is not installed here")
    (mine,) = holders(parse_lsof(result.stdout), port)
    assert mine.pid == proc.pid


def test_windows_listeners_come_from_get_nettcpconnection_json():
    found = parse_listeners("windows", (FIXTURES / "windows-listeners.json").read_text())
    assert [(item.port, item.process) for item in holders(found, 22)] == [
        (22, "sshd"), (22, "sshd"),
    ]  # fmt: skip
    assert holders(found, 11434)[0].pid == 8812


def test_a_port_out_of_range_is_refused():
    with pytest.raises(InputError):
        holders([], 70000)


CONFIG = parse_config({
    "machines": [{"name": "here", "os": "linux", "address": "127.0.0.1", "local": True}],
    "services": [{"name": "gateway", "machine": "here", "manager": "process", "port": 18789},
                 {"name": "ollama", "machine": "here", "manager": "process", "port": 11434}],
    "port_ranges": [{"project": "ez-crm", "machine": "here", "range": "3000-3099",
                     "default_port": 3000, "processes": ["node"]}],
})  # fmt: skip


def test_conflicts_name_the_port_and_who_holds_it():
    found = [
        Listener(18789, 10, "python3", "0.0.0.0"),  # the gateway's port, held by something else
        Listener(11434, 11, "ollama", "127.0.0.1"),  # fine
        Listener(3000, 12, "python3", "127.0.0.1"),  # ez-crm's default port, not a node process
        Listener(3001, 13, "node", "127.0.0.1"),  # fine: ez-crm's dev server
        Listener(5555, 14, "a", "0.0.0.0"),
        Listener(5555, 15, "b", "0.0.0.0"),  # two owners
    ]
    # No owners known: every service is recognised by its name, as a last resort.
    messages = {(c.port, c.message) for c in conflicts(CONFIG, "here", found)}
    assert messages == {
        (18789, "port of gateway, held by python3 (pid 10)"),
        (3000, "default port of ez-crm (3000-3099) held by python3 (pid 12)"),
        (5555, "held by several processes: a (pid 14), b (pid 15)"),
    }


def test_a_service_owns_the_processes_below_its_pid_whatever_their_name():
    owners = Owners({10: "gateway", 11: "gateway", 20: "ollama"})
    found = [
        Listener(18789, 10, "python3", "0.0.0.0"),  # the gateway's own pid
        Listener(18789, 11, "python3", "0.0.0.0"),  # its forked worker, sharing the socket
        Listener(11434, 20, "ollama_llama_server", "127.0.0.1"),
        Listener(3005, 20, "ollama_llama_server", "127.0.0.1"),  # a service's, in ez-crm's range
        Listener(3006, 31, "python3", "127.0.0.1"),  # nobody's, and not a node process
        Listener(11434, 32, "ollama", "127.0.0.1"),  # the name fits, the pid is not ollama's
    ]
    messages = {(c.port, c.message) for c in conflicts(CONFIG, "here", found, owners)}
    assert messages == {
        (3006, "port of ez-crm (3000-3099) held by python3 (pid 31)"),
        (
            11434,
            "held by several processes: ollama (pid 32), ollama_llama_server (pid 20, "
            "service ollama)",
        ),
        (11434, "port of ollama, held by ollama (pid 32)"),
    }


def test_a_name_cut_short_by_lsof_or_ss_still_matches_but_a_fragment_does_not():
    owners = Owners({}, {"gateway": ("gateway", "com.clawdbot.gateway")})
    cut = Listener(18789, 10, "com.clawd", "0.0.0.0")  # lsof's 9 characters
    assert owners.owns("gateway", cut)
    assert not owners.owns("gateway", Listener(18789, 11, "a", "0.0.0.0"))
    assert not owners.owns("gateway", Listener(18789, 12, "", "0.0.0.0"))


async def test_two_processes_on_one_port_are_a_conflict_found_live(listener):
    port, _ = listener
    second = await start_listener(port)  # SO_REUSEPORT lets a second process bind it
    try:
        found = await listeners(HERE, LocalExecutor(HERE))
        (conflict,) = [c for c in conflicts(CONFIG, "here", found) if c.port == port]
        assert "several processes" in conflict.message
    finally:
        second.kill()
        await second.wait()


async def test_ending_a_port_ends_exactly_its_listener(listener):
    port, proc = listener
    bystander_port = free_port()
    bystander = await start_listener(bystander_port)
    try:
        ended = await end_listener(HERE, LocalExecutor(HERE), port)
        assert [e.pid for e in ended] == [proc.pid]
        assert await asyncio.wait_for(proc.wait(), 5) == -15
        assert bystander.returncode is None
        with pytest.raises(InputError, match="nothing listens"):
            await end_listener(HERE, LocalExecutor(HERE), port)
    finally:
        bystander.kill()
        await bystander.wait()


# -- ownership by process, for real -------------------------------------------------------------


async def wait_listening(port: int, wait: float = 10.0) -> list[Listener]:
    deadline = asyncio.get_running_loop().time() + wait
    while asyncio.get_running_loop().time() < deadline:
        held = holders(await listeners(HERE, LocalExecutor(HERE)), port)
        if held:
            return held
        await asyncio.sleep(0.1)
    raise AssertionError(f"nothing listened on {port} within {wait}s")


def owned_config(service: dict[str, object], low: int, high: int) -> Config:
    return parse_config(
        {
            "machines": [{"name": "here", "os": "linux", "address": "127.0.0.1", "local": True}],
            "services": [service],
            "port_ranges": [
                {
                    "project": "aphos",
                    "machine": "here",
                    "range": f"{low}-{high}",
                    "processes": ["node"],
                }
            ],
        }
    )


async def test_a_plain_process_service_owns_the_listener_its_child_opened(tmp_path, listener):
    stray_port, stray = listener
    name = f"own{os.getpid() % 100000}"  # pgrep -x sees at most 15 characters
    (tmp_path / "listen.py").write_text(LISTEN)
    script = tmp_path / name
    script.write_text(f"#!/bin/sh\n'{sys.executable}' '{tmp_path / 'listen.py'}' \"$1\" &\nwait\n")
    script.chmod(0o755)
    port = free_port()
    parent = await asyncio.create_subprocess_exec(
        str(script), str(port), stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    try:
        assert parent.stdout is not None and await parent.stdout.readline() == b"up\n"
        config = owned_config(
            {"name": "api", "machine": "here", "manager": "process", "unit": name, "port": port},
            min(port, stray_port),
            max(port, stray_port),
        )
        owners = await service_owners(config, HERE, LocalExecutor(HERE))
        (child,) = await wait_listening(port)
        assert child.pid != parent.pid and child.process.startswith("python")
        assert owners.of(child) == "api" and owners.pids[parent.pid] == "api"
        found = await listeners(HERE, LocalExecutor(HERE))
        mine = [c for c in conflicts(config, "here", found, owners) if c.port in (port, stray_port)]
        assert [(c.port, c.message.split(" held by ")[0]) for c in mine] == [
            (stray_port, f"port of aphos ({min(port, stray_port)}-{max(port, stray_port)})")
        ]
        assert f"pid {stray.pid}" in mine[0].message
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        await parent.wait()


@needs_pm2
async def test_a_pm2_python_service_on_its_own_port_is_no_conflict_a_stray_in_range_is(
    pm2, listener
):
    stray_port, stray = listener
    port = free_port()
    await start_python_server("web", port)
    (held,) = await wait_listening(port)
    assert held.process.startswith("python")
    low, high = min(port, stray_port), max(port, stray_port)
    config = owned_config(
        {"name": "web", "machine": "here", "manager": "pm2", "port": port}, low, high
    )
    owners = await service_owners(config, HERE, LocalExecutor(HERE))
    assert owners.of(held) == "web"
    found = await listeners(HERE, LocalExecutor(HERE))
    mine = {c.port: c.message for c in conflicts(config, "here", found, owners)}
    assert port not in mine
    assert mine[stray_port].startswith(f"port of aphos ({low}-{high}) held by python")
    assert f"(pid {stray.pid})" in mine[stray_port]
