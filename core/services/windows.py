"""Windows services through PowerShell (Get-Service, Restart-Service) over OpenSSH."""

from __future__ import annotations

import json

from core.errors import RemoteError
from core.services._base import ServiceManager, ServiceStatus, State

# Get-Service's Status as a number (ServiceControllerStatus) or, from newer PowerShell, a name.
_STATES: dict[str, State] = {
    "1": "stopped", "Stopped": "stopped",
    "2": "running", "StartPending": "running",
    "3": "stopped", "StopPending": "stopped",
    "4": "running", "Running": "running",
    "7": "stopped", "Paused": "stopped",
}  # fmt: skip


def powershell(script: str) -> list[str]:
    return ["powershell", "-NoProfile", "-NonInteractive", "-Command", script]


def parse_service_json(output: str) -> tuple[State, str]:
    """``Get-Service X | Select-Object Name,Status | ConvertTo-Json`` -> (state, raw status)."""
    data = json.loads(output)
    raw = str(data.get("Status", ""))
    return _STATES.get(raw, "unknown"), raw


class WindowsService(ServiceManager):
    def _script(self, verb: str) -> list[str]:
        # The unit passed check_name (no quotes, no spaces); single quotes make it a literal.
        return powershell(f"{verb} -Name '{self.unit}' -ErrorAction Stop")

    async def status(self) -> ServiceStatus:
        script = (
            f"Get-Service -Name '{self.unit}' -ErrorAction Stop | "
            "Select-Object Name,Status | ConvertTo-Json -Compress"
        )
        output = (await self._run(powershell(script))).stdout
        try:
            state, raw = parse_service_json(output)
        except (ValueError, AttributeError) as exc:
            raise RemoteError(f"{self.machine}: cannot read Get-Service output: {exc}") from None
        return self._status(state, detail=raw)

    async def start(self) -> None:
        await self._run(self._script("Start-Service"))

    async def stop(self) -> None:
        await self._run(self._script("Stop-Service"))

    async def restart(self) -> None:
        await self._run(self._script("Restart-Service"))
