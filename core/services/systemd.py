"""systemd units through ``systemctl`` and ``journalctl``.

The journal holds a unit's stdout and stderr together (both at priority info unless the program
says otherwise); ``journalctl -o json`` keeps each entry's priority, so the lines at priority
warning or worse (systemd's own "Failed with result 'exit-code'", a program's ``<3>`` lines) are
marked ``[warning]`` / ``[err]``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from core.services._base import ServiceManager, ServiceStatus, check_lines
from core.services._logs import LogStream, ServiceLogs

PROPERTIES = "ActiveState,SubState,MainPID,NRestarts,Result"
JOURNAL_FIELDS = "MESSAGE,PRIORITY,SYSLOG_IDENTIFIER,_PID"


def parse_show(output: str) -> dict[str, str]:
    """``systemctl show --property=...`` output (KEY=VALUE lines) -> a dict."""
    pairs = (line.split("=", 1) for line in output.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _marker(priority: object) -> str:
    level = int(priority) if isinstance(priority, str) and priority.isdecimal() else 6
    return "[err] " if level <= 3 else "[warning] " if level == 4 else ""


def _message(value: Any) -> str:
    if isinstance(value, list):  # journalctl writes a message that is not UTF-8 as its bytes
        return bytes(b for b in value if isinstance(b, int) and 0 <= b < 256).decode(
            "utf-8", "replace"
        )
    return "" if value is None else str(value)


def format_journal(output: str) -> str:
    """``journalctl -o json`` lines -> ``TIME IDENT[PID]: [err] MESSAGE`` lines (UTC)."""
    lines = []
    for raw in output.splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            if raw.strip():
                lines.append(raw)
            continue
        micros = str(entry.get("__REALTIME_TIMESTAMP", ""))
        when = (
            datetime.fromtimestamp(int(micros) / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if micros.isdecimal()
            else "?"
        )
        who = str(entry.get("SYSLOG_IDENTIFIER") or "?")
        pid = f"[{entry['_PID']}]" if entry.get("_PID") else ""
        text = _marker(entry.get("PRIORITY")) + _message(entry.get("MESSAGE"))
        lines.append(f"{when} {who}{pid}: {text}")
    return "\n".join(lines)


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

    async def logs(self, lines: int) -> ServiceLogs:
        check_lines(lines)
        argv = ["journalctl", "-u", self.unit, "-n", str(lines), "--no-pager", "-o", "json"]
        argv.append(f"--output-fields={JOURNAL_FIELDS}")
        output = (await self._run(argv, sudo=True)).stdout
        stream = LogStream("journal", f"journalctl -u {self.unit}", format_journal(output))
        return ServiceLogs(self.service.name, self.machine, lines, (stream,))
