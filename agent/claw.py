"""One claw: its home, its gateway config file, and the supervised gateway process.

The gateway runs in its own process group (so SIGTERM/SIGKILL reach its workers too) with HOME
and TMPDIR inside the claw's home. The token is in the config file (mode 600, home mode 700) and
in env ``OPENCLAW_GATEWAY_TOKEN``, never on the command line. When the process dies it is started
again after a backoff that doubles up to ``MAX_BACKOFF`` (reset after a run of ``STABLE`` s);
``restarts`` counts those. ``ready`` is true once a real connect handshake with the claw's token
got hello-ok (core/openclaw.py); it is re-checked while the claw runs.

Each gateway's identity (``identify``: its start time and command line, as ``ps`` prints them)
is recorded when it starts, and again once it is ready (the real gateway renames its process,
``openclaw-gateway``, after start). An agent that finds a pid left by a previous run signals it
only when the live process still has that identity: a pid the system reused for another process
never is. The start time is what tells them apart (a pid is not reused within the second); the
command line guards against a clock or ``ps`` that prints times coarsely.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import secrets
from core.openclaw import gateway_url, probe

log = logging.getLogger("clawops.agent")
MAX_BACKOFF = 30.0
FIRST_BACKOFF = 0.5
STABLE = 60.0


# Defaults [agent.gateway_config] may change. cloudflared on the Mini forwards the node's proxy
# to the gateway's loopback port with X-Forwarded-* headers: without trusting the local hop the
# gateway refuses such upgrades outright (HTTP 403); trusted, it sees the proxy as a remote
# device, which the agent then approves (agent/devices.py).
DEFAULTS: dict[str, Any] = {"gateway": {"trustedProxies": ["127.0.0.1", "::1"]}}


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, tables recursively; ``over`` wins."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 600 from the first byte, in a 700 folder."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secrets.write_private(path, text.encode())


@dataclass(frozen=True)
class ProcessIdentity:
    """What tells one process from a later one with the same pid."""

    started: str  # ps's lstart in UTC, e.g. "Mon Jan  6 10:00:00 2025"
    command: str  # the command line as ps shows it (the process may have renamed itself)


# A fixed zone and locale: the start time must read the same to the next agent.
_PS_ENV = {"TZ": "UTC", "LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


async def identify(pid: int) -> ProcessIdentity | None:
    """The start time and command line of live process ``pid``; None when there is none (or
    ``ps`` cannot tell). ``ps -o lstart=,command=`` is the same on macOS and Linux."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "ps",
            "-ww",
            "-o",
            "lstart=,command=",
            "-p",
            str(pid),
            env=_PS_ENV,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    except (OSError, TimeoutError) as exc:
        log.warning("cannot run ps to identify pid %d: %s", pid, exc)
        return None
    # lstart is five words (weekday, month, day, time, year); the command line follows.
    words = out.decode(errors="replace").strip().split(None, 5)
    if proc.returncode != 0 or len(words) < 6:
        return None
    return ProcessIdentity(" ".join(words[:5]), words[5])


def kill_group(pid: int, sig: int) -> bool:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class Claw:
    def __init__(
        self, claw_id: str, port: int, token: str, bucket: str | None, home: Path, log_path: Path
    ) -> None:
        self.claw_id, self.port, self.token, self.bucket = claw_id, port, token, bucket
        self.home, self.log_path = home, log_path
        self.status = "stopped"
        self.pid: int | None = None
        self.restarts = 0
        self.ready = False
        self.error = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.identity: ProcessIdentity | None = None
        # Called when what the state file records (pid, identity) changed.
        self.on_change: Callable[[], None] | None = None

    @property
    def config_path(self) -> Path:
        return self.home / ".openclaw" / "openclaw.json"

    def info(self) -> dict[str, Any]:
        return {
            "clawId": self.claw_id, "port": self.port, "status": self.status, "pid": self.pid,
            "restarts": self.restarts, "ready": self.ready, "error": self.error,
        }  # fmt: skip

    def write_config(self, extra: dict[str, Any]) -> None:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.home, 0o700)
        (self.home / "tmp").mkdir(exist_ok=True, mode=0o700)
        ours = {
            "gateway": {
                "mode": "local", "port": self.port, "bind": "loopback",
                "auth": {"mode": "token", "token": self.token},
            }
        }  # fmt: skip
        write_private(self.config_path, json.dumps(merged(merged(DEFAULTS, extra), ours), indent=2))

    def environment(self, drop: set[str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(
            HOME=str(self.home), TMPDIR=str(self.home / "tmp"),
            OPENCLAW_GATEWAY_TOKEN=self.token,
            OPENCLAW_DISABLE_BONJOUR="1", OPENCLAW_NO_AUTO_UPDATE="1",
        )  # fmt: skip
        return env

    def start(self, argv: list[str], drop_env: set[str]) -> None:
        """Start supervising (no-op when already supervised)."""
        if self._task is None or self._task.done():
            self._stopping = False
            self.status, self.ready = "starting", False
            self._task = asyncio.create_task(self._supervise(argv, drop_env))

    async def _spawn(self, argv: list[str], drop_env: set[str]) -> asyncio.subprocess.Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return await asyncio.create_subprocess_exec(
                *argv, cwd=self.home, env=self.environment(drop_env),
                stdin=asyncio.subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(fd)

    async def _supervise(self, argv: list[str], drop_env: set[str]) -> None:
        backoff = FIRST_BACKOFF
        while not self._stopping:
            self.status, self.ready = "starting", False
            try:
                self._proc = await self._spawn(argv, drop_env)
            except OSError as exc:
                self.status, self.pid = "crashed", None
                self.error = f"cannot start the gateway: {exc.strerror or exc}"
                log.warning("claw %s: %s", self.claw_id, self.error)
            else:
                self.pid, started = self._proc.pid, time.monotonic()
                self.identity = await identify(self._proc.pid)
                self._changed()
                watcher = asyncio.create_task(self._watch_ready())
                try:
                    code = await self._proc.wait()
                finally:
                    watcher.cancel()
                if self._stopping:
                    break
                self.status, self.ready = "crashed", False
                self.error = f"gateway exited with code {code}"
                log.warning("claw %s: %s; restarting in %.1fs", self.claw_id, self.error, backoff)
                if time.monotonic() - started > STABLE:
                    backoff = FIRST_BACKOFF
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            if not self._stopping:
                self.restarts += 1

    async def _watch_ready(self) -> None:
        url = gateway_url(self.port)
        while True:
            ok = await probe(url, self.token, timeout=3.0)
            if ok and not self.ready:
                self.status, self.ready, self.error = "running", True, ""
            if ok:
                # The gateway renames its process some time after it starts, not always before
                # it answers: read its identity again while it runs, so the state file holds
                # the name a later agent will see.
                await self._reidentify()
            elif self.ready:
                self.ready = False
            await asyncio.sleep(5.0 if self.ready else 0.3)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def _reidentify(self) -> None:
        # A gateway renames its process once it runs: record the name the next agent will see.
        if self._proc is None or self._proc.returncode is not None:
            return
        identity = await identify(self._proc.pid)
        if identity is not None and identity != self.identity:
            self.identity = identity
            self._changed()

    async def stop(self, timeout: float) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; stop supervising."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            kill_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                kill_group(proc.pid, signal.SIGKILL)
                await proc.wait()
            kill_group(proc.pid, signal.SIGKILL)  # workers left in the group
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.status, self.pid, self.ready, self.identity = "stopped", None, False, None
