"""A plain process with no manager: found by its exact name, ended with a signal.

It cannot be started or restarted (nothing knows how to start it); stop sends SIGTERM.
"""

from __future__ import annotations

from core.errors import InputError
from core.services._base import ServiceManager, ServiceStatus


class PlainProcess(ServiceManager):
    async def status(self) -> ServiceStatus:
        result = await self._run(["pgrep", "-x", self.unit], allowed=(0, 1))
        pids = [int(p) for p in result.stdout.split() if p.isdigit()]
        if not pids:
            return self._status("stopped", detail="no such process")
        return self._status("running", pid=pids[0], detail=f"{len(pids)} process(es)")

    async def start(self) -> None:
        raise InputError(f"{self.service.name} is a plain process: clawops cannot start it")

    async def stop(self) -> None:
        await self._run(["pkill", "-TERM", "-x", self.unit], allowed=(0, 1))

    async def restart(self) -> None:
        raise InputError(
            f"{self.service.name} is a plain process: clawops can stop it but not start it"
        )
