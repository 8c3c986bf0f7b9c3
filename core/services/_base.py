"""What every service manager offers, and the checks every name and argument passes first."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from core.config import ServiceConfig
from core.errors import InputError, RemoteError
from core.executors import Executor, Result

State = Literal["running", "stopped", "failed", "unknown"]
# What a chat user may name: letters, digits and . _ @ - ; nothing a shell would act on.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
MAX_LINES = 2000


def check_name(value: str, what: str = "service name") -> str:
    if not SAFE_NAME.match(value):
        raise InputError(f"{what} {value!r} is not allowed (letters, digits, . _ @ - only)")
    return value


def check_lines(value: int) -> int:
    if not 1 <= value <= MAX_LINES:
        raise InputError(f"lines must be between 1 and {MAX_LINES}")
    return value


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    machine: str
    state: State
    pid: int | None = None
    restarts: int | None = None
    detail: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"


class ServiceManager(ABC):
    """One manager (launchd, PM2, ...) for one service on one machine's executor."""

    def __init__(self, service: ServiceConfig, executor: Executor) -> None:
        self.service = service
        self.executor = executor
        self.unit = check_name(service.unit_name, "unit")

    @property
    def machine(self) -> str:
        return self.executor.machine.name

    def _status(self, state: State, **extra: object) -> ServiceStatus:
        return ServiceStatus(self.service.name, self.machine, state, **extra)  # type: ignore[arg-type]

    async def _run(self, argv: Sequence[str], *, sudo: bool = False, timeout: float | None = None,
                   allowed: Sequence[int] = (0,)) -> Result:  # fmt: skip
        """Run a management command; a failure becomes RemoteError with its stderr."""
        if sudo and self.service.sudo:
            argv = ["sudo", "-n", *argv]
        result = await self.executor.run(argv, timeout=timeout)
        if result.timed_out:
            raise RemoteError(f"{self.machine}: `{argv[0]}` did not finish in time")
        if result.exit_status not in allowed:
            message = (result.stderr or result.stdout).strip().splitlines()
            reason = message[-1] if message else f"exit status {result.exit_status}"
            raise RemoteError(f"{self.machine}: {self.service.name}: {reason}")
        return result

    @abstractmethod
    async def status(self) -> ServiceStatus: ...

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def restart(self) -> None: ...

    async def logs(self, lines: int) -> str:
        """The last ``lines`` of the service's log file (``log_path`` in its config)."""
        check_lines(lines)
        if not self.service.log_path:
            raise InputError(f"{self.service.name} has no log_path configured")
        if self.executor.machine.os == "windows":
            path = self.service.log_path.replace("'", "''")
            script = f"Get-Content -LiteralPath '{path}' -Tail {lines}"
            argv = ["powershell", "-NoProfile", "-NonInteractive", "-Command", script]
        else:
            argv = ["tail", "-n", str(lines), self.service.log_path]
        return (await self._run(argv)).stdout
