"""Running commands on machines: locally (asyncio subprocess) or over SSH (asyncssh).

A command is always an argv list, never a shell string: the local executor execs it directly,
the SSH executor quotes every word for the remote shell (POSIX ``sh`` on macOS and Linux, the
MS C runtime rules on Windows, whose OpenSSH server starts programs through CreateProcess). A
command never outlives its timeout; an unreachable machine raises ``Unreachable`` quickly (the
machine's connect timeout), so a sweep over many machines is not held up by one.

A local command gets a scrubbed environment (``core.secrets.child_env``): none of the variables
the config names in a ``*_env`` key, no ``CLAWOPS_*`` one, unless the caller allows it by name.
A remote command gets none of this process's environment: asyncssh sends only what ``env`` or an
ssh_config ``SendEnv`` line names, and we pass neither.

SSH connections are pooled, one per machine, opened on first use and reopened after a drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncssh

from core.config import MachineConfig
from core.errors import NoSSH, RemoteError, Unreachable
from core.secrets import child_env
from core.socks import open_socks5

OUTPUT_LIMIT = 1024 * 1024  # bytes kept of stdout/stderr each


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    exit_status: int | None  # None: killed at its timeout
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def timed_out(self) -> bool:
        return self.exit_status is None


class Executor(Protocol):
    machine: MachineConfig

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: str | None = None,
        allow_env: Sequence[str] = (),
    ) -> Result: ...

    async def close(self) -> None: ...


def quote(argv: Sequence[str], os_name: str) -> str:
    """One command line for the remote side, every word quoted for its parser."""
    if not argv:
        raise ValueError("empty command")
    if os_name == "windows":
        return subprocess.list2cmdline(list(argv))
    return shlex.join(argv)


class LocalExecutor:
    """Runs argv on this machine, no shell involved, without the node's secrets in its
    environment (``secret_env``: the variables the config names, ``secret_env_names``)."""

    def __init__(self, machine: MachineConfig, secret_env: frozenset[str] = frozenset()) -> None:
        self.machine = machine
        self.secret_env = secret_env
        self.default_timeout = machine.timeout.total_seconds() * 3

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: str | None = None,
        allow_env: Sequence[str] = (),
    ) -> Result:
        timeout = timeout or self.default_timeout
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env(self.secret_env, allow_env),
                start_new_session=True,  # so a timeout can end the whole process group
            )
        except FileNotFoundError:
            return Result(tuple(argv), 127, "", f"{argv[0]}: command not found", 0.0)
        except PermissionError as exc:
            return Result(tuple(argv), 126, "", f"{argv[0]}: {exc.strerror}", 0.0)
        data = stdin.encode() if stdin is not None else None
        try:
            out, err = await asyncio.wait_for(proc.communicate(data), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            out, err = await proc.communicate()
            return Result(tuple(argv), None, _text(out), _text(err), time.monotonic() - started)
        return Result(
            tuple(argv), proc.returncode, _text(out), _text(err), time.monotonic() - started
        )

    async def close(self) -> None:
        return None


class SSHExecutor:
    """Runs argv on a remote machine over one pooled SSH connection."""

    def __init__(self, machine: MachineConfig) -> None:
        if machine.ssh is None:
            raise NoSSH(machine.name)
        self.machine = machine
        self.ssh = machine.ssh
        self.connect_timeout = machine.timeout.total_seconds()
        self.default_timeout = self.connect_timeout * 3
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self._known_hosts = (
            str(Path(self.ssh.known_hosts).expanduser()) if self.ssh.known_hosts else None
        )
        self._key = str(Path(self.ssh.key).expanduser()) if self.ssh.key else None

    async def _connection(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            conn = self._conn
            if conn is not None and not conn.is_closed():
                return conn
            self._conn = await self._connect()
            return self._conn

    async def _connect(self) -> asyncssh.SSHClientConnection:
        name, ssh = self.machine.name, self.ssh
        options: dict[str, Any] = {
            "port": ssh.port,
            "connect_timeout": self.connect_timeout,
        }
        # No known_hosts given: asyncssh's default, ~/.ssh/known_hosts, checked all the same.
        if self._known_hosts is not None:
            options["known_hosts"] = self._known_hosts
        if ssh.user:
            options["username"] = ssh.user
        if self._key is not None:
            options["client_keys"] = [self._key]
        try:
            if self.machine.socks_proxy:
                # The port stays in the options: known_hosts entries are looked up by it.
                options["sock"] = await open_socks5(
                    self.machine.socks_proxy, ssh.host, ssh.port, self.connect_timeout
                )
            return await asyncio.wait_for(
                asyncssh.connect(ssh.host, **options), self.connect_timeout
            )
        except TimeoutError:
            raise Unreachable(f"{name}: no SSH answer within {self.connect_timeout:g} s") from None
        except asyncssh.HostKeyNotVerifiable as exc:
            raise RemoteError(f"{name}: host key not trusted ({exc.reason})") from None
        except asyncssh.PermissionDenied as exc:
            raise RemoteError(f"{name}: SSH login refused ({exc.reason})") from None
        except (OSError, asyncssh.Error) as exc:
            raise Unreachable(f"{name}: cannot connect over SSH: {_reason(exc)}") from None

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: str | None = None,
        allow_env: Sequence[str] = (),  # nothing local reaches the remote side anyway
    ) -> Result:
        timeout = timeout or self.default_timeout
        command = quote(argv, self.machine.os)
        started = time.monotonic()
        for attempt in (1, 2):
            conn = await self._connection()
            # No input: stdin is at EOF at once, as with a local program reading /dev/null.
            io: dict[str, Any] = (
                {"input": stdin} if stdin is not None else {"stdin": asyncssh.DEVNULL}
            )
            try:
                process = await conn.create_process(command, **io)
                try:
                    done = await process.wait(check=False, timeout=timeout)
                except asyncssh.TimeoutError as exc:
                    # Signal it (where the server allows) and close the channel either way.
                    with contextlib.suppress(OSError, asyncssh.Error):
                        process.kill()
                    process.close()
                    return Result(
                        tuple(argv), None, _text(exc.stdout), _text(exc.stderr),
                        time.monotonic() - started,
                    )  # fmt: skip
            except (asyncssh.ConnectionLost, asyncssh.DisconnectError, BrokenPipeError) as exc:
                # A pooled connection that dropped: reconnect once, then report.
                await self._drop()
                if attempt == 2:
                    raise Unreachable(f"{self.machine.name}: {_reason(exc)}") from None
                continue
            except asyncssh.ChannelOpenError as exc:
                await self._drop()
                if attempt == 2:
                    raise RemoteError(f"{self.machine.name}: {_reason(exc)}") from None
                continue
            status = done.exit_status if done.exit_status is not None else 255
            return Result(
                tuple(argv), status, _text(done.stdout), _text(done.stderr),
                time.monotonic() - started,
            )  # fmt: skip
        raise AssertionError("unreachable")  # pragma: no cover

    async def _drop(self) -> None:
        async with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(OSError, asyncssh.Error, TimeoutError):
                await asyncio.wait_for(self._conn.wait_closed(), 2)
            self._conn = None


def executor_for(
    machine: MachineConfig, secret_env: frozenset[str] = frozenset()
) -> LocalExecutor | SSHExecutor:
    """The machine's executor; ``NoSSH`` for one that is neither local nor reached over SSH."""
    return LocalExecutor(machine, secret_env) if machine.local else SSHExecutor(machine)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value)
    return text if len(text) <= OUTPUT_LIMIT else text[-OUTPUT_LIMIT:]


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return str(reason) or type(exc).__name__
