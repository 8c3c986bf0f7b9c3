"""Health: metrics parsed from every OS, checks against real servers, the concurrent sweep."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from core.config import parse_config
from core.executors import LocalExecutor
from core.fleet import Fleet
from core.health import MachineReport, metrics_command, parse_metrics, sweep
from tests.auxil.net import free_port
from tests.auxil.sshd import start_sshd

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"


def test_macos_metrics_are_read_from_sysctl_vm_stat_df_and_top():
    metrics = parse_metrics("macos", (FIXTURES / "macos.txt").read_text())
    assert metrics.swap_total_mb == 3072.0 and metrics.swap_used_mb == 2203.2
    assert metrics.swap_percent == 71.7
    # (active 364127 + wired 150317 + compressor 171230) pages x 16 KiB of 16 GiB
    assert metrics.memory_percent == 65.4
    assert (metrics.disk_percent, metrics.disk_free_gb) == (10.0, 92.9)
    assert (metrics.load1, metrics.cpu_percent, metrics.processes) == (2.41, 20.8, 512)


def test_windows_metrics_are_read_from_the_cim_json():
    metrics = parse_metrics("windows", (FIXTURES / "windows.json").read_text())
    assert metrics.memory_percent == 64.1
    assert (metrics.swap_total_mb, metrics.swap_used_mb) == (5120.0, 256.0)
    assert (metrics.disk_percent, metrics.cpu_percent, metrics.processes) == (60.6, 7.0, 241)


async def test_linux_metrics_are_read_live_from_this_machine():
    here = {"name": "here", "os": "linux", "address": "127.0.0.1", "local": True}
    executor = LocalExecutor(parse_config({"machines": [here]}).machines[0])
    result = await executor.run(metrics_command("linux"))
    metrics = parse_metrics("linux", result.stdout)
    assert 0 < metrics.memory_percent < 100
    assert 0 <= metrics.disk_percent <= 100 and metrics.disk_free_gb is not None
    assert metrics.load1 is not None and metrics.processes and metrics.processes > 1


def test_garbage_metrics_output_is_a_clear_error():
    from core.errors import RemoteError

    with pytest.raises(RemoteError, match="macos metrics"):
        parse_metrics("macos", "command not found")


@pytest.fixture
async def web_service():
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="models: qwen3-coder:30b")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=502, text="bad gateway")

    app = web.Application()
    app.router.add_get("/api/tags", ok)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def test_a_sweep_checks_every_machine_and_service_concurrently(tmp_path, web_service):
    server = await start_sshd(tmp_path)
    closed = free_port()
    config = parse_config({
        "machines": [
            {"name": "here", "os": "linux", "address": "127.0.0.1", "local": True},
            {"name": "mini", "os": "linux", "address": "127.0.0.1", "timeout": "5s",
             "ssh": {"host": server.host, "port": server.port, "key": str(server.client_key),
                     "known_hosts": str(server.known_hosts)}},
            {"name": "msi", "os": "windows", "address": "127.0.0.1", "timeout": "1s",
             "ssh": {"host": "127.0.0.1", "port": free_port()}},
        ],
        "services": [
            {"name": "ollama", "machine": "here", "manager": "process", "unit": "no-such-proc",
             "health": {"type": "http", "url": f"http://127.0.0.1:{web_service}/api/tags",
                        "expect_body": "qwen3"}},
            {"name": "crabwalk", "machine": "here", "manager": "process",
             "health": {"type": "http", "url": f"http://127.0.0.1:{web_service}/broken"}},
            {"name": "aphos", "machine": "here", "manager": "process", "port": closed,
             "health": {"type": "tcp"}},
            *[{"name": f"slow-{i}", "machine": "mini", "manager": "process",
               "health": {"type": "command", "argv": ["sleep", "0.4"]}} for i in range(4)],
            {"name": "sshd", "machine": "msi", "manager": "windows"},
        ],
    })  # fmt: skip
    fleet = Fleet(config)
    try:
        report = await sweep(fleet, with_status=False)
        # With manager states too: the plain processes named here are not running.
        with_status = await sweep(fleet, ["here"])
    finally:
        await fleet.close()
        await server.close()
    machines = {m.name: m for m in report.machines}
    assert machines["here"].reachable and machines["here"].metrics is not None
    assert machines["mini"].reachable and machines["mini"].metrics is not None
    assert not machines["msi"].reachable and "msi" in machines["msi"].error
    services = {s.service: s for s in report.services}
    assert services["ollama"].check is not None and services["ollama"].check.ok
    assert services["crabwalk"].check is not None
    assert services["crabwalk"].check.detail == "HTTP 502, expected 200"
    assert services["aphos"].check is not None and not services["aphos"].check.ok
    assert services["sshd"].skipped and "msi unreachable" in services["sshd"].error
    slow = [services[f"slow-{i}"] for i in range(4)]
    assert all(s.check is not None and s.check.ok for s in slow)
    # The four 0.4 s checks overlapped: the sweep took far less than their sum.
    total = sum(s.check.latency_ms or 0 for s in slow if s.check) / 1000
    assert report.seconds < total * 0.75, (report.seconds, total)
    assert {s.service for s in report.unhealthy} == {"crabwalk", "aphos"}
    ollama = next(s for s in with_status.services if s.service == "ollama")
    assert ollama.status is not None and ollama.status.state == "stopped" and not ollama.healthy
    assert [m.name for m in with_status.machines] == ["here"]


@dataclass
class HangingHost:
    """Accepts TCP connections and never says a word (a wedged sshd); notes who hung up."""

    port: int = 0
    accepted: int = 0
    hung_up: int = 0


@pytest.fixture
async def hanging_host():
    host = HangingHost()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host.accepted += 1
        await reader.read()  # whatever the client says, until it closes
        host.hung_up += 1
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    host.port = server.sockets[0].getsockname()[1]
    yield host
    server.close()


async def test_a_host_that_accepts_but_never_speaks_is_unreachable_within_its_timeout(
    tmp_path, hanging_host
):
    server = await start_sshd(tmp_path)
    config = parse_config({
        "machines": [
            {"name": "here", "os": "linux", "address": "127.0.0.1", "local": True},
            {"name": "mini", "os": "linux", "address": "127.0.0.1", "timeout": "5s",
             "ssh": {"host": server.host, "port": server.port, "key": str(server.client_key),
                     "known_hosts": str(server.known_hosts)}},
            {"name": "wedged", "os": "linux", "address": "127.0.0.1", "timeout": "1s",
             "ssh": {"host": "127.0.0.1", "port": hanging_host.port, "key": str(server.client_key),
                     "known_hosts": str(server.known_hosts)}},
        ],
        "services": [
            {"name": "gateway", "machine": "mini", "manager": "process",
             "health": {"type": "command", "argv": ["true"]}},
            {"name": "game", "machine": "wedged", "manager": "process",
             "health": {"type": "command", "argv": ["true"]}},
        ],
    })  # fmt: skip
    fleet = Fleet(config)
    started = time.monotonic()
    told: list[tuple[str, int, int]] = []

    async def on_machine(machine: MachineReport, done: int, total: int) -> None:
        told.append((machine.name, done, total))

    try:
        report = await sweep(fleet, with_status=False, on_machine=on_machine)
    finally:
        elapsed = time.monotonic() - started
        await fleet.close()
        await server.close()
    machines = {m.name: m for m in report.machines}
    assert not machines["wedged"].reachable
    assert "no SSH answer within 1 s" in machines["wedged"].error
    assert machines["here"].metrics is not None and machines["mini"].metrics is not None
    services = {s.service: s for s in report.services}
    assert services["game"].skipped and "wedged unreachable" in services["game"].error
    assert services["gateway"].check is not None and services["gateway"].check.ok
    # Each machine was told as it was done; the wedged one last, at its timeout.
    assert [(done, total) for _, done, total in told] == [(1, 3), (2, 3), (3, 3)]
    assert {name for name, _, _ in told[:2]} == {"here", "mini"} and told[2][0] == "wedged"
    # Bounded by the wedged host's 1 s timeout, not by the other machines or a TCP default.
    assert elapsed < 1 + 3, elapsed
    # The half-open connection was closed at the timeout, not left holding a socket.
    await asyncio.sleep(0.1)
    assert hanging_host.accepted == hanging_host.hung_up == 1


async def test_a_machine_with_many_services_gets_a_few_commands_at_a_time(tmp_path):
    # OpenSSH allows 10 sessions per connection (MaxSessions); the fleet-wide bound is higher.
    server = await start_sshd(tmp_path, delay=0.2)
    config = parse_config({
        "machines": [
            {"name": "mini", "os": "linux", "address": "127.0.0.1", "timeout": "5s",
             "ssh": {"host": server.host, "port": server.port, "key": str(server.client_key),
                     "known_hosts": str(server.known_hosts)}},
        ],
        "services": [
            {"name": f"claw-{i}", "machine": "mini", "manager": "process",
             "health": {"type": "command", "argv": ["true"]}} for i in range(12)
        ],
    })  # fmt: skip
    fleet = Fleet(config)
    try:
        report = await sweep(fleet, with_status=False, per_machine=4)
    finally:
        await fleet.close()
        await server.close()
    assert all(s.check is not None and s.check.ok for s in report.services)
    assert server.most_running == 4 and server.connections == 1
