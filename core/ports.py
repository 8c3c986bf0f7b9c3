"""Listening ports per machine, compared with the configured services and reserved ranges.

Listeners come from ``lsof -nP -iTCP -sTCP:LISTEN -F pcn`` on macOS, ``ss -Hltnp`` on Linux and
``Get-NetTCPConnection -State Listen`` on Windows, parsed into one shape. Conflicts are:

- a service's port held by a process that is not that service (``owner``: two claimants);
- a port inside a project's reserved range held by a process of another project;
- a range's default port taken by something else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from core.config import Config, MachineConfig
from core.errors import InputError, RemoteError
from core.executors import Executor


@dataclass(frozen=True, order=True)
class Listener:
    port: int
    pid: int | None
    process: str
    address: str


@dataclass(frozen=True)
class Conflict:
    machine: str
    port: int
    message: str


def listeners_command(os_name: str) -> list[str]:
    if os_name == "macos":
        return ["lsof", "-nP", "-iTCP", "-sTCP:LISTEN", "-F", "pcn"]
    if os_name == "windows":
        script = (
            "Get-NetTCPConnection -State Listen | ForEach-Object { [pscustomobject]@{"
            "LocalAddress=$_.LocalAddress; LocalPort=$_.LocalPort; OwningProcess=$_.OwningProcess;"
            " Name=(Get-Process -Id $_.OwningProcess -ErrorAction SilentlyContinue).ProcessName"
            " } } | ConvertTo-Json -Compress"
        )
        return ["powershell", "-NoProfile", "-NonInteractive", "-Command", script]
    return ["ss", "-Hltnp"]


def _split_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def parse_lsof(output: str) -> list[Listener]:
    found: set[Listener] = set()
    pid: int | None = None
    command = ""
    for line in output.splitlines():
        if not line:
            continue
        tag, value = line[0], line[1:]
        if tag == "p":
            pid, command = int(value), ""
        elif tag == "c":
            command = value
        elif tag == "n" and ":" in value and "->" not in value:
            host, port = _split_address(value)
            found.add(Listener(port, pid, command, host))
    return sorted(found)


_SS_USER = re.compile(r'\("([^"]*)",pid=(\d+)')


def parse_ss(output: str) -> list[Listener]:
    found: set[Listener] = set()
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        host, port = _split_address(fields[3])
        user = _SS_USER.search(line)
        pid = int(user.group(2)) if user else None
        found.add(Listener(port, pid, user.group(1) if user else "", host))
    return sorted(found)


def parse_windows(output: str) -> list[Listener]:
    data = json.loads(output) if output.strip() else []
    items = data if isinstance(data, list) else [data]
    found = {
        Listener(int(i["LocalPort"]), int(i["OwningProcess"]), str(i.get("Name") or ""),
                 str(i["LocalAddress"]))
        for i in items
    }  # fmt: skip
    return sorted(found)


def parse_listeners(os_name: str, output: str) -> list[Listener]:
    try:
        if os_name == "macos":
            return parse_lsof(output)
        if os_name == "windows":
            return parse_windows(output)
        return parse_ss(output)
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteError(f"cannot read the {os_name} listener list: {exc}") from None


async def listeners(machine: MachineConfig, executor: Executor) -> list[Listener]:
    result = await executor.run(listeners_command(machine.os))
    # lsof exits 1 when nothing matches: no listeners is an answer, not a failure.
    if result.timed_out or result.exit_status not in (0, 1):
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RemoteError(f"{machine.name}: cannot list listening ports: {reason}")
    return parse_listeners(machine.os, result.stdout)


def holders(found: list[Listener], port: int) -> list[Listener]:
    """Who holds ``port`` (one process may listen on several addresses: one entry each)."""
    if not 1 <= port <= 65535:
        raise InputError(f"{port} is not a port (1-65535)")
    return [item for item in found if item.port == port]


def _matches(process: str, *names: str) -> bool:
    """Whether a process name plausibly belongs to a service (names may be truncated)."""
    process = process.lower()
    return any(process and (process in n.lower() or n.lower() in process) for n in names if n)


def conflicts(config: Config, machine: str, found: list[Listener]) -> list[Conflict]:
    """Configured ports and ranges of ``machine`` against what actually listens there."""
    result: list[Conflict] = []
    by_port: dict[int, list[Listener]] = {}
    for item in found:
        by_port.setdefault(item.port, []).append(item)
    services = {s.port: s for s in config.services if s.machine == machine and s.port}
    ranges = [r for r in config.port_ranges if r.machine == machine]
    for port, held in sorted(by_port.items()):
        owners = ", ".join(sorted({h.process or f"pid {h.pid}" for h in held}))
        if len({h.pid for h in held}) > 1:
            result.append(Conflict(machine, port, f"held by several processes: {owners}"))
        service = services.get(port)
        if service and not any(_matches(h.process, service.name, service.unit_name) for h in held):
            result.append(Conflict(machine, port, f"port of {service.name}, held by {owners}"))
            continue
        for rng in ranges:
            low, high = rng.range
            if service is not None or not low <= port <= high or not rng.processes:
                continue
            if not any(_matches(h.process, *rng.processes) for h in held):
                what = "default port" if port in rng.default_port else "port"
                result.append(Conflict(
                    machine, port, f"{what} of {rng.project} ({low}-{high}) held by {owners}"
                ))  # fmt: skip
    return result


async def end_listener(machine: MachineConfig, executor: Executor, port: int) -> list[Listener]:
    """End exactly the process(es) listening on ``port``; return what was ended.

    The holders are looked up again here, right before the signal, so a stale /ports screen
    never makes us signal a pid that has since been reused by something else.
    """
    held = holders(await listeners(machine, executor), port)
    pids = sorted({h.pid for h in held if h.pid})
    if not held:
        raise InputError(f"nothing listens on port {port} on {machine.name}")
    if not pids:
        raise RemoteError(f"{machine.name}: cannot see which process holds port {port}")
    if machine.os == "windows":
        ids = ",".join(str(p) for p in pids)
        argv = ["powershell", "-NoProfile", "-NonInteractive", "-Command",
                f"Stop-Process -Id {ids} -ErrorAction Stop"]  # fmt: skip
    else:
        argv = ["kill", "-TERM", *(str(p) for p in pids)]
    result = await executor.run(argv)
    if not result.ok:
        reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise RemoteError(f"{machine.name}: could not end pid {pids}: {reason}")
    return held
