"""launchd (macOS LaunchAgents and LaunchDaemons) through ``launchctl``.

Status comes from ``launchctl list LABEL``, whose output is an old-style plist dictionary with
``PID`` (only while running) and ``LastExitStatus`` (a wait status: exit code x 256, or a
signal). Restart is ``launchctl kickstart -k`` on ``gui/<uid>/LABEL`` for agents and
``system/LABEL`` for daemons, which kills a running instance and starts it again.

Logs are the job's StandardOutPath and StandardErrorPath, which ``launchctl print TARGET`` shows
as ``stdout path = ...`` and ``stderr path = ...`` lines one tab deep (deeper lines belong to
nested blocks such as the environment). A configured ``log_path`` / ``error_log_path`` overrides
either; a job that is not loaded can only be read through them.
"""

from __future__ import annotations

import re

from core.errors import InputError
from core.services._base import ServiceManager, ServiceStatus, check_lines
from core.services._logs import ServiceLogs

_FIELD = re.compile(r'^\s*"(?P<key>[A-Za-z]+)"\s*=\s*(?P<value>[^;(]*);', re.MULTILINE)
NOT_LOADED = 113  # launchctl's exit status for "Could not find service"
# `launchctl print`'s own lines are one tab deep; nested blocks (environment, ...) are deeper.
_PRINTED_PATH = re.compile(r"^\t(?P<stream>stdout|stderr) path = (?P<path>.+?)\s*$", re.MULTILINE)


def parse_print_paths(output: str) -> dict[str, str]:
    """``{"stdout": path, "stderr": path}`` from ``launchctl print`` output (either may miss)."""
    return {m["stream"]: m["path"] for m in _PRINTED_PATH.finditer(output)}


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

    async def logs(self, lines: int) -> ServiceLogs:
        check_lines(lines)
        streams = self._configured_streams("stdout", "stderr")
        if len(streams) < 2:
            daemon = self.service.launchd_domain == "daemon"
            argv = ["launchctl", "print", await self._target()]
            result = await self._run(argv, sudo=daemon, allowed=(0, NOT_LOADED))
            if result.exit_status == NOT_LOADED and not streams:
                raise InputError(
                    f"{self.service.name} is not loaded, so launchd cannot say where it logs: "
                    "set log_path (and error_log_path) in its config"
                )
            found = {**parse_print_paths(result.stdout), **streams}
            streams = {name: found[name] for name in ("stdout", "stderr") if name in found}
        if not streams:
            raise InputError(
                f"{self.service.name} has no StandardOutPath or StandardErrorPath in its plist: "
                "set log_path (and error_log_path) in its config"
            )
        return await self._tails(streams, lines)
