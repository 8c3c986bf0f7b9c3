"""A sweep: every machine's metrics and every service's check and state, all concurrently.

Machines are swept in parallel and each machine's services in parallel after its metrics, so a
sweep takes about as long as its slowest machine, not the sum of all checks. A machine that cannot
be reached is reported once, and its services are marked skipped rather than failed one by one
(the parent suppresses its children).

A machine without SSH from this node (``MachineConfig.runs_commands`` false) has no metrics and
no manager states: its services' HTTP/TCP checks run from here, and it is reachable when one of
them answered (unreachable when none did, unknown when it has none). Its services with no such
check are skipped with the reason; none is reported down, or healthy, for want of SSH.

Two bounds, because a sweep waits on the network, not on this machine's CPU:

- ``concurrency`` (64) probes in flight over the whole fleet. Each is an SSH channel on the
  machine's pooled connection or one HTTP/TCP socket, so this caps sockets and bursts, not work;
  it must grow with the fleet or the sweep turns into a queue (bench/health_sweep.py: 50 machines
  took 6.5 times their slowest machine at 8, 1.2 times at 64).
- ``per_machine`` (6) probes in flight on one machine: OpenSSH refuses an 11th session on one
  connection (MaxSessions, default 10), and the bot and jobs share that pooled connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from core.config import MachineConfig, ServiceConfig
from core.errors import ClawopsError
from core.fleet import Fleet
from core.health.checks import CheckResult, run_check
from core.health.metrics import MachineMetrics, metrics_command, parse_metrics
from core.services import ServiceStatus

T = TypeVar("T")


@dataclass(frozen=True)
class MachineReport:
    """``reachable`` None: unknown (a machine without SSH whose services have no HTTP/TCP check,
    so nothing was asked of it). ``no_ssh``: watched by its checks only (no metrics)."""

    name: str
    reachable: bool | None
    metrics: MachineMetrics | None = None
    error: str = ""
    no_ssh: bool = False


@dataclass(frozen=True)
class ServiceReport:
    service: str
    machine: str
    check: CheckResult | None = None
    status: ServiceStatus | None = None
    error: str = ""
    skipped: bool = False
    note: str = ""  # what was not looked at, e.g. the manager's state on a machine without SSH

    @property
    def reason(self) -> str:
        """Why it is unhealthy, the most specific first: an error, a manager state other than
        running, then the check's detail."""
        if self.error:
            return self.error
        if self.status is not None and not self.status.running:
            return self.status.state
        return self.check.detail if self.check is not None else ""

    @property
    def healthy(self) -> bool:
        if self.skipped or self.error:
            return False
        if self.check is not None and not self.check.ok:
            return False
        return self.status is None or self.status.state in ("running", "unknown")


# Told each machine's report as it is done, with how many are done of how many (a caller shows
# "3/5 machines"); its errors are the caller's.
MachineDone = Callable[["MachineReport", int, int], Awaitable[None]]


@dataclass(frozen=True)
class SweepReport:
    machines: list[MachineReport]
    services: list[ServiceReport]
    seconds: float

    @property
    def unhealthy(self) -> list[ServiceReport]:
        return [s for s in self.services if not s.healthy and not s.skipped]


async def sweep(
    fleet: Fleet, machines: list[str] | None = None, *, concurrency: int = 64,
    per_machine: int = 6, with_status: bool = True, on_machine: MachineDone | None = None,
) -> SweepReport:  # fmt: skip
    started = time.monotonic()
    done = 0
    limit = asyncio.Semaphore(concurrency)
    chosen = [fleet.machine(name) for name in machines] if machines else fleet.machines
    async with httpx.AsyncClient(follow_redirects=False) as client:

        async def bounded(work: Awaitable[T]) -> T:
            async with limit:
                return await work

        async def one_machine(machine: MachineConfig) -> tuple[MachineReport, list[ServiceReport]]:
            own = asyncio.Semaphore(per_machine)

            async def one_service(service: ServiceConfig) -> ServiceReport:
                async with own:  # taken first, so a machine's queue holds no fleet-wide slot
                    return await bounded(check_service(fleet, service, client, with_status))

            services = fleet.services_on(machine.name)
            if not machine.runs_commands:
                watched = list(await asyncio.gather(*(one_service(s) for s in services)))
                return watched_machine(machine, watched), watched
            report = await bounded(machine_metrics(fleet, machine))
            if not report.reachable:
                down = f"{machine.name} unreachable"
                return report, [
                    ServiceReport(s.name, s.machine, skipped=True, error=down) for s in services
                ]
            checked = await asyncio.gather(*(one_service(s) for s in services))
            return report, list(checked)

        async def reported(machine: MachineConfig) -> tuple[MachineReport, list[ServiceReport]]:
            nonlocal done
            result = await one_machine(machine)
            done += 1
            if on_machine is not None:
                await on_machine(result[0], done, len(chosen))
            return result

        results = await asyncio.gather(*(reported(m) for m in chosen))
    return SweepReport(
        machines=[r for r, _ in results],
        services=[s for _, services in results for s in services],
        seconds=round(time.monotonic() - started, 3),
    )


def watched_machine(machine: MachineConfig, services: list[ServiceReport]) -> MachineReport:
    """A machine without SSH as its services' HTTP/TCP checks saw it: reachable when one of
    them answered, unreachable when all were asked and none did, unknown when it has none."""
    checks = [s.check for s in services if s.check is not None]
    if not checks:
        return MachineReport(
            machine.name, None, error="no SSH and no HTTP/TCP check: not watched", no_ssh=True
        )
    answered = sum(1 for c in checks if c.answered)
    said = f"{answered}/{len(checks)} HTTP/TCP check(s) answered"
    return MachineReport(machine.name, answered > 0, error=f"no SSH; {said}", no_ssh=True)


async def machine_metrics(fleet: Fleet, machine: MachineConfig) -> MachineReport:
    try:
        executor = fleet.executor(machine.name)
        result = await executor.run(metrics_command(machine.os))
    except ClawopsError as exc:
        return MachineReport(machine.name, False, error=str(exc))
    if result.timed_out:
        return MachineReport(machine.name, False, error="metrics command timed out")
    try:
        return MachineReport(machine.name, True, parse_metrics(machine.os, result.stdout))
    except ClawopsError as exc:
        return MachineReport(machine.name, True, error=str(exc))


async def check_service(
    fleet: Fleet, service: ServiceConfig, client: httpx.AsyncClient, with_status: bool
) -> ServiceReport:
    machine = fleet.machine(service.machine)
    if not machine.runs_commands:
        return await watch_service(service, machine, client)
    executor = fleet.executor(machine.name)
    check = await run_check(service, machine, executor, client)
    status = None
    error = ""
    if with_status:
        try:
            status = await fleet.manager(service).status()
        except ClawopsError as exc:
            error = str(exc)
    return ServiceReport(service.name, service.machine, check, status, error)


async def watch_service(
    service: ServiceConfig, machine: MachineConfig, client: httpx.AsyncClient
) -> ServiceReport:
    """A service on a machine without SSH: its HTTP/TCP check alone decides (the manager's
    state cannot be read); with none, or a command check, it is skipped and says why."""
    kind = service.health.type if service.health is not None else None
    if kind not in ("http", "tcp"):
        why = "a command check cannot run there" if kind == "command" else "it has no check"
        error = f"no SSH to {machine.name} and {why}: not watched"
        return ServiceReport(service.name, service.machine, skipped=True, error=error)
    check = await run_check(service, machine, None, client)
    note = "manager state not read (no SSH)"
    return ServiceReport(service.name, service.machine, check, note=note)
