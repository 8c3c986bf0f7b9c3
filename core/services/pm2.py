"""PM2 (the Node process manager on the Mac Mini): ``pm2 jlist`` for state, plain verbs else."""

from __future__ import annotations

import json
import re
from typing import Any

from core.errors import RemoteError
from core.services._base import ServiceManager, ServiceStatus, State, check_lines

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
    async def status(self) -> ServiceStatus:
        output = (await self._run(["pm2", "jlist"])).stdout
        try:
            processes = parse_jlist(output)
        except ValueError as exc:
            raise RemoteError(f"{self.machine}: cannot read pm2 jlist: {exc}") from None
        for proc in processes:
            if proc.get("name") == self.unit:
                env = proc.get("pm2_env") or {}
                raw = str(env.get("status", "unknown"))
                pid = proc.get("pid") or None
                return self._status(
                    _STATES.get(raw, "unknown"),
                    pid=int(pid) if pid else None,
                    restarts=int(env.get("restart_time", 0)),
                    detail=raw,
                )
        return self._status("stopped", detail="not in pm2's process list")

    async def start(self) -> None:
        await self._run(["pm2", "start", self.unit])

    async def stop(self) -> None:
        await self._run(["pm2", "stop", self.unit])

    async def restart(self) -> None:
        await self._run(["pm2", "restart", self.unit])

    async def logs(self, lines: int) -> str:
        check_lines(lines)
        argv = ["pm2", "logs", self.unit, "--lines", str(lines), "--nostream", "--raw"]
        return (await self._run(argv)).stdout
