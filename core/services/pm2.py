"""PM2 (the Node process manager on the Mac Mini): ``pm2 jlist`` for state and for where the
process's stdout and stderr files are, plain verbs else."""

from __future__ import annotations

import json
import re
from typing import Any

from core.errors import NotFound, RemoteError
from core.services._base import ServiceManager, ServiceStatus, State, check_lines
from core.services._logs import ServiceLogs

_STATES: dict[str, State] = {
    "online": "running",
    "launching": "running",
    "stopped": "stopped",
    "stopping": "stopped",
    "errored": "failed",
    "one-launch-status": "stopped",
}


def parse_jlist(output: str) -> list[dict[str, Any]]:
    """``pm2 jlist`` output -> its process list (PM2 may print warnings before the JSON)."""
    match = re.search(r"^\[\s*[{\]]", output, re.MULTILINE)
    if match is None:
        raise ValueError("no JSON list in pm2 jlist output")
    data = json.loads(output[match.start() :])
    if not isinstance(data, list):
        raise ValueError("pm2 jlist did not answer a list")
    return data


class PM2(ServiceManager):
    async def _processes(self) -> list[dict[str, Any]]:
        output = (await self._run(["pm2", "jlist"])).stdout
        try:
            return parse_jlist(output)
        except ValueError as exc:
            raise RemoteError(f"{self.machine}: cannot read pm2 jlist: {exc}") from None

    async def _process(self) -> dict[str, Any]:
        for proc in await self._processes():
            if proc.get("name") == self.unit:
                return proc
        raise NotFound(f"{self.machine}: {self.unit} is not in pm2's process list")

    async def status(self) -> ServiceStatus:
        try:
            proc = await self._process()
        except NotFound:
            return self._status("stopped", detail="not in pm2's process list")
        env = proc.get("pm2_env") or {}
        raw = str(env.get("status", "unknown"))
        pid = proc.get("pid") or None
        return self._status(
            _STATES.get(raw, "unknown"),
            pid=int(pid) if pid else None,
            restarts=int(env.get("restart_time", 0)),
            detail=raw,
        )

    async def start(self) -> None:
        await self._run(["pm2", "start", self.unit])

    async def stop(self) -> None:
        await self._run(["pm2", "stop", self.unit])

    async def restart(self) -> None:
        await self._run(["pm2", "restart", self.unit])

    async def logs(self, lines: int) -> ServiceLogs:
        """The tails of the files PM2 writes the process's stdout and stderr to (from
        ``pm2 jlist``); ``pm2 logs`` would mix in its banner and lose which stream is which."""
        check_lines(lines)
        env = (await self._process()).get("pm2_env") or {}
        streams = {
            name: str(env[key])
            for name, key in (("stdout", "pm_out_log_path"), ("stderr", "pm_err_log_path"))
            if env.get(key)
        }
        if not streams:
            raise RemoteError(f"{self.machine}: pm2 does not say where {self.unit} logs")
        return await self._tails(streams, lines)
