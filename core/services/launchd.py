"""launchd (macOS LaunchAgents and LaunchDaemons) through ``launchctl``.

Status comes from ``launchctl list LABEL``, whose output is an old-style plist dictionary with
``PID`` (only while running) and ``LastExitStatus`` (a wait status: exit code x 256, or a
signal). Restart is ``launchctl kickstart -k`` on ``gui/<uid>/LABEL`` for agents and
``system/LABEL`` for daemons, which kills a running instance and starts it again.
"""

from __future__ import annotations

import re

from core.services._base import ServiceManager, ServiceStatus

_FIELD = re.compile(r'^\s*"(?P<key>[A-Za-z]+)"\s*=\s*(?P<value>[^;(]*);', re.MULTILINE)
NOT_LOADED = 113  # launchctl's exit status for "Could not find service"


def parse_list(output: str) -> dict[str, str]:
    """Top-level scalar fields of ``launchctl list LABEL`` output."""
    return {m["key"]: m["value"].strip().strip('"') for m in _FIELD.finditer(output)}


class Launchd(ServiceManager):
    _uid: str | None = None

    async def _target(self) -> str:
        if self.service.launchd_domain == "daemon":
            return f"system/{self.unit}"
        if self._uid is None:
            self._uid = (await self._run(["id", "-u"])).stdout.strip()
        return f"gui/{self._uid}/{self.unit}"

    async def status(self) -> ServiceStatus:
        daemon = self.service.launchd_domain == "daemon"
        result = await self._run(["launchctl", "list", self.unit], sudo=daemon,
                                 allowed=(0, NOT_LOADED))  # fmt: skip
        if result.exit_status == NOT_LOADED:
            return self._status("stopped", detail="not loaded")
        fields = parse_list(result.stdout)
        if "PID" in fields and fields["PID"].isdigit():
            return self._status("running", pid=int(fields["PID"]))
        last = fields.get("LastExitStatus", "0")
        code = int(last) if last.lstrip("-").isdigit() else 0
        if code == 0:
            return self._status("stopped", detail="loaded, not running")
        exit_code, signal = divmod(code, 256) if code > 0 else (code, 0)
        detail = f"exited with {exit_code}" if exit_code else f"killed by signal {signal}"
        return self._status("failed", detail=detail)

    async def start(self) -> None:
        daemon = self.service.launchd_domain == "daemon"
        await self._run(["launchctl", "start", self.unit], sudo=daemon)

    async def stop(self) -> None:
        daemon = self.service.launchd_domain == "daemon"
        await self._run(["launchctl", "stop", self.unit], sudo=daemon)

    async def restart(self) -> None:
        daemon = self.service.launchd_domain == "daemon"
        await self._run(["launchctl", "kickstart", "-k", await self._target()], sudo=daemon)
