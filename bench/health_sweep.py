"""A health sweep over N simulated machines against the slowest of them probed alone.

    .venv/bin/python bench/health_sweep.py [--sizes 1,10,50] [--concurrency C] [--live]

Each machine is a real SSH server (asyncssh's, from tests/auxil/sshd.py) on its own loopback
address, 127.0.0.2, 127.0.0.3, ..., that waits a delay before answering every command. The delays
are spread evenly from 0.1 s to 0.5 s, so one machine is the slowest; it comes last in the
config, the worst place for it under the sweep's concurrency bound. The metrics command (the
LINUX script of core.health.metrics) is answered with this machine's real output, recorded once
at start (``--live``: run by /bin/sh on every probe instead). Each machine has two services with
a ``command`` check (``true``, run for real) and a plain-process status (``pgrep``, answered
"running"), so a machine's probe is three SSH round-trips in a row: metrics, check, status.

For each N, in one event loop with the servers and the client side together:

- slowest: a sweep of the slowest machine alone (a fleet of its own), so the best any sweep of
  N machines can do;
- sweep: a sweep of all N machines from a fresh fleet (1st: every machine connects) and again on
  the same fleet (2nd: pooled connections), with ratio = sweep / slowest for each;
- connections: SSH connections the N servers accepted over both sweeps (one per machine when the
  executor pools them), and the file descriptors this process held after them (both ends of every
  connection live here: two per machine, where a real node holds one).

At the largest N it then repeats the sweep under several concurrency bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import Config, parse_config
from core.executors import LocalExecutor, quote
from core.fleet import Fleet
from core.health import SweepReport, metrics_command, sweep
from tests.auxil.sshd import SSHServer, start_sshd

FASTEST, SLOWEST = 0.1, 0.5
SERVICES = ("gateway", "cron")
DEFAULT_CONCURRENCY: int = inspect.signature(sweep).parameters["concurrency"].default


@dataclass
class Row:
    n: int
    concurrency: int
    sweeps: tuple[float, float]
    slowest: tuple[float, float]
    connections: int
    fds: int

    def ratio(self, i: int) -> float:
        return self.sweeps[i] / self.slowest[i]


def delays(n: int) -> list[float]:
    if n == 1:
        return [SLOWEST]
    return [round(FASTEST + (SLOWEST - FASTEST) * i / (n - 1), 3) for i in range(n)]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def start_machines(tmp: Path, n: int, canned: dict[str, str]) -> list[SSHServer]:
    servers = []
    for i, delay in enumerate(delays(n)):
        home = tmp / f"n{n}-m{i}"
        home.mkdir()
        servers.append(await start_sshd(home, f"127.0.0.{2 + i}", delay=delay, canned=canned))
    return servers


def fleet_config(servers: list[SSHServer]) -> Config:
    machines: list[dict[str, Any]] = []
    services: list[dict[str, Any]] = []
    for i, server in enumerate(servers):
        name = f"m{i:02d}"
        machines.append({
            "name": name, "os": "linux", "address": server.host, "timeout": "5s",
            "ssh": {"host": server.host, "port": server.port, "user": server.user,
                    "key": str(server.client_key), "known_hosts": str(server.known_hosts)},
        })  # fmt: skip
        services += [
            {"name": service, "machine": name, "manager": "process",
             "health": {"type": "command", "argv": ["true"]}}
            for service in SERVICES
        ]  # fmt: skip
    return parse_config({"machines": machines, "services": services})


def verify(report: SweepReport, n: int) -> None:
    """Every machine read and every service healthy, or the timing means nothing."""
    bad = [m.name for m in report.machines if m.metrics is None] + [
        f"{s.machine}/{s.service}" for s in report.services if not s.healthy
    ]
    if len(report.machines) != n or bad:
        raise SystemExit(f"sweep of {n} machines went wrong: {bad}")


async def timed_sweeps(fleet: Fleet, n: int, concurrency: int) -> tuple[float, float]:
    """A first sweep (connecting) and a second one (pooled) of the same fleet, in seconds."""
    times = []
    for _ in range(2):
        started = time.perf_counter()
        report = await sweep(fleet, concurrency=concurrency)
        times.append(time.perf_counter() - started)
        verify(report, n)
    return times[0], times[1]


async def measure(servers: list[SSHServer], concurrency: int, slowest: tuple[float, float]) -> Row:
    n = len(servers)
    before = sum(s.connections for s in servers)
    fleet = Fleet(fleet_config(servers))
    await asyncio.sleep(0.2)  # the previous fleet's connections finish closing
    fds_before = open_fds()
    try:
        sweeps = await timed_sweeps(fleet, n, concurrency)
        fds = open_fds() - fds_before
    finally:
        await fleet.close()
    connections = sum(s.connections for s in servers) - before
    return Row(n, concurrency, sweeps, slowest, connections, fds)


async def slowest_alone(servers: list[SSHServer]) -> tuple[float, float]:
    fleet = Fleet(fleet_config([max(servers, key=lambda s: s.delay)]))
    try:
        return await timed_sweeps(fleet, 1, DEFAULT_CONCURRENCY)
    finally:
        await fleet.close()


def print_rows(rows: list[Row]) -> None:
    print(
        f"{'N':>3} {'bound':>5} | {'sweep':>6} {'slowest':>7} {'ratio':>5} (1st, connects) | "
        f"{'sweep':>6} {'slowest':>7} {'ratio':>5} (2nd, pooled) | connections  fds held"
    )
    for r in rows:
        print(
            f"{r.n:>3} {r.concurrency:>5} | {r.sweeps[0]:>5.3f}s {r.slowest[0]:>6.3f}s "
            f"{r.ratio(0):>5.2f}                | {r.sweeps[1]:>5.3f}s {r.slowest[1]:>6.3f}s "
            f"{r.ratio(1):>5.2f}               | {r.connections:>11} {r.fds:>9}"
        )


async def main(args: argparse.Namespace) -> None:
    metrics_line = quote(metrics_command("linux"), "linux")
    canned = {f"pgrep -x {service}": "4242\n" for service in SERVICES}
    if not args.live:
        here = parse_config({"machines": [{"name": "here", "os": "linux",
                                           "address": "127.0.0.1", "local": True}]})  # fmt: skip
        recorded = await LocalExecutor(here.machines[0]).run(metrics_command("linux"))
        canned[metrics_line] = recorded.stdout
    sizes = [int(n) for n in args.sizes.split(",")]
    rows: list[Row] = []
    bounds: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            servers = await start_machines(Path(tmp), n, canned)
            try:
                slowest = await slowest_alone(servers)
                rows.append(await measure(servers, args.concurrency, slowest))
                if n == max(sizes):
                    for bound in (8, 16, 32, 64, 128):
                        if bound != args.concurrency:
                            bounds.append(await measure(servers, bound, slowest))
            finally:
                for server in servers:
                    await server.close()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    metrics = "run by /bin/sh" if args.live else "a recorded real output"
    print(
        f"delays {FASTEST:g}-{SLOWEST:g} s, {len(SERVICES)} services with a command check per "
        f"machine, metrics {metrics}; open-file limit {soft}"
    )
    print_rows(rows)
    print(f"\nN = {max(sizes)} under other concurrency bounds:")
    print_rows(bounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50", help="machine counts, comma-separated")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--live", action="store_true", help="run the metrics script on each probe")
    asyncio.run(main(parser.parse_args()))
