"""Ports: real listeners on this machine (ss and lsof), Windows JSON, conflicts, ending one."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from core.config import parse_config
from core.errors import InputError
from core.executors import LocalExecutor
from core.ports import (
    Listener,
    conflicts,
    end_listener,
    holders,
    listeners,
    parse_listeners,
    parse_lsof,
)
from tests.auxil.net import free_port

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
    messages = {(c.port, c.message) for c in conflicts(CONFIG, "here", found)}
    assert messages == {
        (18789, "port of gateway, held by python3"),
        (3000, "default port of ez-crm (3000-3099) held by python3"),
        (5555, "held by several processes: a, b"),
    }


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
