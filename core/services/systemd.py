"""systemd units through ``systemctl`` and ``journalctl``."""

from __future__ import annotations

from core.services._base import ServiceManager, ServiceStatus, check_lines

PROPERTIES = "ActiveState,SubState,MainPID,NRestarts,Result"


def parse_show(output: str) -> dict[str, str]:
    """``systemctl show --property=...`` output (KEY=VALUE lines) -> a dict."""
    pairs = (line.split("=", 1) for line in output.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


class Systemd(ServiceManager):
    async def status(self) -> ServiceStatus:
        argv = ["systemctl", "show", self.unit, f"--property={PROPERTIES}"]
        fields = parse_show((await self._run(argv)).stdout)
        active, sub = fields.get("ActiveState", ""), fields.get("SubState", "")
        pid = int(fields["MainPID"]) if fields.get("MainPID", "0").isdigit() else 0
        restarts = fields.get("NRestarts", "")
        extra = {"restarts": int(restarts)} if restarts.isdigit() else {}
        detail = f"{active}/{sub}" if sub else active
        if active in ("active", "reloading", "activating"):
            return self._status("running", pid=pid or None, detail=detail, **extra)
        if active == "failed":
            return self._status("failed", detail=f"{detail} ({fields.get('Result', '')})")
        if active in ("inactive", "deactivating"):
            return self._status("stopped", detail=detail, **extra)
        return self._status("unknown", detail=detail or "no such unit")

    async def start(self) -> None:
        await self._run(["systemctl", "start", self.unit], sudo=True)

    async def stop(self) -> None:
        await self._run(["systemctl", "stop", self.unit], sudo=True)

    async def restart(self) -> None:
        await self._run(["systemctl", "restart", self.unit], sudo=True)

    async def logs(self, lines: int) -> str:
        check_lines(lines)
        argv = ["journalctl", "-u", self.unit, "-n", str(lines), "--no-pager", "-o", "short-iso"]
        return (await self._run(argv, sudo=True)).stdout
