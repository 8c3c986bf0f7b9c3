"""Health checks of services: HTTP (status, body, latency), TCP connect, a command's exit."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from core.config import MachineConfig, ServiceConfig
from core.config._models import CommandCheck, HttpCheck, TcpCheck
from core.errors import ClawopsError, NoSSH
from core.executors import Executor


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    latency_ms: float | None = None  # set once the other side answered (or a command ended)

    @property
    def answered(self) -> bool:
        """An HTTP/TCP check's peer answered (a response of any status, an accepted connection):
        its machine is reachable, whatever the verdict. A machine without SSH is reachable by
        this alone."""
        return self.latency_ms is not None


async def http_check(check: HttpCheck, client: httpx.AsyncClient) -> CheckResult:
    started = time.perf_counter()
    try:
        response = await client.get(check.url, timeout=check.timeout.total_seconds())
    except httpx.TimeoutException:
        return CheckResult(False, f"no answer within {check.timeout.total_seconds():g} s")
    except httpx.HTTPError as exc:
        return CheckResult(False, f"cannot connect: {type(exc).__name__}")
    latency = round((time.perf_counter() - started) * 1000, 1)
    if response.status_code != check.expect_status:
        return CheckResult(
            False, f"HTTP {response.status_code}, expected {check.expect_status}", latency
        )
    if check.expect_body is not None and check.expect_body not in response.text:
        return CheckResult(False, f"body lacks {check.expect_body!r}", latency)
    return CheckResult(True, f"HTTP {response.status_code}", latency)


async def tcp_check(check: TcpCheck, service: ServiceConfig, machine: MachineConfig) -> CheckResult:
    host = check.host or ("127.0.0.1" if machine.local else machine.address)
    port = check.port or service.port
    if port is None:
        return CheckResult(False, "tcp check without a port (set health.port or the service's)")
    started = time.perf_counter()
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), check.timeout.total_seconds()
        )
    except TimeoutError:
        return CheckResult(
            False, f"{host}:{port}: no answer within {check.timeout.total_seconds():g} s"
        )
    except OSError as exc:
        return CheckResult(False, f"{host}:{port}: {exc.strerror or exc}")
    writer.close()
    return CheckResult(
        True, f"{host}:{port} open", round((time.perf_counter() - started) * 1000, 1)
    )


async def command_check(check: CommandCheck, executor: Executor) -> CheckResult:
    started = time.perf_counter()
    try:
        result = await executor.run(check.argv, timeout=check.timeout.total_seconds())
    except ClawopsError as exc:
        return CheckResult(False, str(exc))
    latency = round((time.perf_counter() - started) * 1000, 1)
    if result.timed_out:
        return CheckResult(False, f"timed out after {check.timeout.total_seconds():g} s", latency)
    if result.exit_status != check.expect_exit:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        return CheckResult(
            False, f"exit {result.exit_status}, expected {check.expect_exit} {tail[0]}".strip(),
            latency,
        )  # fmt: skip
    return CheckResult(True, f"exit {result.exit_status}", latency)


async def run_check(
    service: ServiceConfig,
    machine: MachineConfig,
    executor: Executor | None,
    client: httpx.AsyncClient,
) -> CheckResult | None:
    """The service's configured check, or None when it has none. ``executor`` is only needed
    for a command check (None: the machine has no SSH, and the check says so)."""
    check = service.health
    if isinstance(check, HttpCheck):
        return await http_check(check, client)
    if isinstance(check, TcpCheck):
        return await tcp_check(check, service, machine)
    if isinstance(check, CommandCheck):
        if executor is None:
            return CheckResult(False, str(NoSSH(machine.name)))
        return await command_check(check, executor)
    return None
