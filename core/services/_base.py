"""What every service manager offers, and the checks every name and argument passes first."""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from core.config import ServiceConfig
from core.errors import InputError, RemoteError
from core.executors import Executor, Result
from core.services._logs import TAIL_BYTES, LogStream, ServiceLogs, last_lines

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

    async def logs(self, lines: int) -> ServiceLogs:
        """The last ``lines`` of the service's log files: ``log_path`` and ``error_log_path``
        in its config (managers that know where their service writes override this)."""
        check_lines(lines)
        configured = self._configured_streams()
        if not configured:
            raise InputError(f"{self.service.name} has no log_path (or error_log_path) configured")
        return await self._tails(configured, lines)

    def _configured_streams(self, out: str = "log", err: str = "error log") -> dict[str, str]:
        paths = {out: self.service.log_path, err: self.service.error_log_path}
        return {name: path for name, path in paths.items() if path}

    async def _tails(self, streams: dict[str, str], lines: int) -> ServiceLogs:
        """Each named path's tail, read at once; one file named twice is read once."""
        by_path: dict[str, list[str]] = {}
        for name, path in streams.items():
            by_path.setdefault(path, []).append(name)
        tails = await asyncio.gather(
            *(self._tail("+".join(names), path, lines) for path, names in by_path.items())
        )
        return ServiceLogs(self.service.name, self.machine, lines, tuple(tails))

    async def _tail(self, name: str, path: str, lines: int) -> LogStream:
        """The end of one file; a file that cannot be read is a stream with the reason."""
        if path == "/dev/null":
            return LogStream(name, path, error="it is not kept (written to /dev/null)")
        if self.executor.machine.os == "windows":
            literal = path.replace("'", "''")
            script = f"Get-Content -LiteralPath '{literal}' -Tail {lines} -ErrorAction Stop"
            argv = ["powershell", "-NoProfile", "-NonInteractive", "-Command", script]
        else:
            argv = ["tail", "-c", str(TAIL_BYTES), path]
        result = await self._run(argv, allowed=(0, 1))
        if result.exit_status != 0:
            reason = (result.stderr or result.stdout).strip().splitlines()
            return LogStream(name, path, error=reason[-1] if reason else "exit status 1")
        text, cut = last_lines(result.stdout, lines)
        return LogStream(name, path, text, cut=cut)
