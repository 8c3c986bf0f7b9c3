"""Listening ports per machine, compared with the configured services and reserved ranges.

Listeners come from ``lsof -nP -iTCP -sTCP:LISTEN -F pcn`` on macOS, ``ss -Hltnp`` on Linux and
``Get-NetTCPConnection -State Listen`` on Windows, parsed into one shape (one entry per process
holding a socket: a server and the workers it forked share theirs).

Who owns a listener is decided by process, not by name (``service_owners``):

1. every configured service of the machine is asked for its state; the pid its manager reports
   (PM2's, launchd's, systemd's MainPID, the first ``pgrep -x`` match of a plain process) and
   every descendant of it (``core.processes``) belong to that service;
2. a service whose manager reports no pid (Windows services; a stopped service; a manager that
   cannot be read) is recognised by its name or unit in the process name, as a last resort.

Conflicts (``conflicts``) are listeners on a reserved port that no configured service owns:

- a service's port held by a process that is not that service's;
- a port inside a ``[[port_ranges]]`` range held by a process no configured service owns and
  whose name is not among the range's ``processes`` (the project's hand-started programs, such
  as a ``node`` dev server); a range without ``processes`` reserves nothing by itself;
- one port held by processes of more than one owner.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from core.config import Config, MachineConfig, ServiceConfig
from core.errors import ClawopsError, InputError, NotFound, RemoteError
from core.executors import Executor
from core.processes import descendants, process_tree
from core.services import ServiceStatus, manager_for


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
        users = _SS_USER.findall(line)  # every process holding the socket, not only the first
        found |= {Listener(port, int(pid), name, host) for name, pid in users}
        if not users:  # another user's process: ss cannot say whose
            found.add(Listener(port, None, "", host))
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


TRUNCATED = 9  # lsof cuts command names at 9 characters, ss (the kernel's comm) at 15


def _matches(process: str, *names: str) -> bool:
    """Whether a process name is one of ``names``, contains one, or is one cut short."""
    process = process.lower()
    return bool(process) and any(
        n in process or (len(process) >= TRUNCATED and n.startswith(process))
        for n in (name.lower() for name in names if name)
    )


@dataclass(frozen=True)
class Owners:
    """Which configured service owns which process on one machine (see the module docstring)."""

    pids: Mapping[int, str] = field(default_factory=dict)  # pid -> service
    # Services whose manager reported no pid: service -> the names its process may carry.
    by_name: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def owns(self, service: str, listener: Listener) -> bool:
        if listener.pid is not None and listener.pid in self.pids:
            return self.pids[listener.pid] == service
        names = self.by_name.get(service)
        return names is not None and _matches(listener.process, *names)

    def of(self, listener: Listener) -> str | None:
        """The configured service that owns ``listener``'s process, if any."""
        if listener.pid is not None and listener.pid in self.pids:
            return self.pids[listener.pid]
        return next((s for s in self.by_name if self.owns(s, listener)), None)


async def _status(service: ServiceConfig, executor: Executor) -> ServiceStatus | None:
    try:
        return await manager_for(service, executor).status()
    except ClawopsError:
        return None  # not known: the service falls back to its name


async def service_owners(config: Config, machine: MachineConfig, executor: Executor) -> Owners:
    """Who owns what on ``machine``: each service's pid (from its manager) and descendants."""
    services = [s for s in config.services if s.machine == machine.name]
    statuses = await asyncio.gather(*(_status(s, executor) for s in services))
    roots = {st.pid: s.name for s, st in zip(services, statuses, strict=True) if st and st.pid}
    by_name = {
        s.name: (s.name, s.unit_name)
        for s, st in zip(services, statuses, strict=True)
        if st is None or not st.pid
    }
    if not roots:
        return Owners({}, by_name)
    try:
        tree = await process_tree(machine, executor)
    except ClawopsError:
        tree = {}  # the managers' own pids still count; their children cannot be seen
    return Owners(descendants(tree, roots), by_name)


def _who(held: list[Listener], owners: Owners) -> str:
    """``python3 (pid 12, service web), node (pid 40)``."""
    parts = set()
    for item in held:
        service = owners.of(item)
        pid = f"pid {item.pid}" if item.pid else "pid unknown"
        parts.add(f"{item.process or '?'} ({pid}{f', service {service}' if service else ''})")
    return ", ".join(sorted(parts))


def conflicts(
    config: Config, machine: str, found: list[Listener], owners: Owners | None = None
) -> list[Conflict]:
    """Configured ports and ranges of ``machine`` against what actually listens there.

    ``owners`` comes from ``service_owners``; without it every service is recognised by name.
    """
    if owners is None:
        mine = [s for s in config.services if s.machine == machine]
        owners = Owners({}, {s.name: (s.name, s.unit_name) for s in mine})
    result: list[Conflict] = []
    by_port: dict[int, list[Listener]] = {}
    for item in found:
        by_port.setdefault(item.port, []).append(item)
    services = {s.port: s for s in config.services if s.machine == machine and s.port}
    ranges = [r for r in config.port_ranges if r.machine == machine]
    for port, held in sorted(by_port.items()):
        claimants = {owners.of(h) or f"pid {h.pid}" for h in held}
        if len(claimants) > 1:
            who = _who(held, owners)
            result.append(Conflict(machine, port, f"held by several processes: {who}"))
        service = services.get(port)
        if service is not None:
            strangers = [h for h in held if not owners.owns(service.name, h)]
            if strangers:
                who = _who(strangers, owners)
                result.append(Conflict(machine, port, f"port of {service.name}, held by {who}"))
            continue
        for rng in ranges:
            low, high = rng.range
            if not low <= port <= high or not rng.processes:
                continue
            strangers = [
                h for h in held if owners.of(h) is None and not _matches(h.process, *rng.processes)
            ]
            if strangers:
                what = "default port" if port in rng.default_port else "port"
                who = _who(strangers, owners)
                text = f"{what} of {rng.project} ({low}-{high}) held by {who}"
                result.append(Conflict(machine, port, text))
    return result


def listening(found: list[Listener], machine: MachineConfig, port: int) -> list[Listener]:
    """The holders of ``port``; nobody listening there is an error that says so."""
    held = holders(found, port)
    if not held:
        raise NotFound(f"nothing listens on :{port} on {machine.name}")
    return held


async def end_listener(
    machine: MachineConfig,
    executor: Executor,
    port: int,
    vet: Callable[[list[Listener]], None] | None = None,
) -> list[Listener]:
    """End exactly the process(es) listening on ``port``; return what was ended.

    The holders are looked up again here, right before the signal, so a stale /ports screen
    never makes us signal a pid that has since been reused by something else; ``vet`` sees
    them first and raises to refuse (``core.portguard``).
    """
    held = listening(await listeners(machine, executor), machine, port)
    if vet is not None:
        vet(held)
    pids = sorted({h.pid for h in held if h.pid})
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
