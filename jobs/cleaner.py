"""The cleaner: too many iOS simulators, orphaned dev processes, port conflicts (SPEC 4).

Per Unix machine, concurrently (Windows machines are skipped, and so are machines without SSH
from this node: the run's data lists those under ``no_ssh``, a note, not a problem):

- macOS: count CoreSimulator processes (``pgrep -f CoreSimulator``); over
  ``simulator_threshold``, ``xcrun simctl shutdown all``;
- orphans: ``ps`` lists pid, parent, leader id, age and command line; an orphan is a process
  whose parent is PID 1 (launchd, or init: where the kernel reparents a process whose parent
  died), older than ``orphan_min_age``, whose command line matches one of ``orphan_patterns``
  (regular expressions, searched), and that no service manager runs (below). They are
  reported, and with ``kill_orphans`` sent SIGTERM — exactly those pids, nothing else;
- port conflicts: what listens against the configured ports and ranges, ownership decided
  by process (core.ports).

Why PPID 1 is not enough, and what else an orphan must be. Service managers are parents too:
every launchd job has PPID 1 on macOS, and on Linux so do systemd's services and the daemons
that detach themselves (PM2's God daemon). What sets them apart from an orphan:

1. They are session leaders. launchd spawns every job in a new session, systemd calls
   ``setsid()`` for every service process, and a detaching daemon (PM2's, ``setsid cmd``) does
   so itself. An orphan is the child of a shell or program that died: it lives on in its
   parent's session, so it is not the leader of one (a non-interactive shell's background job
   is not even a process group leader). Linux's ``ps`` prints the session id (``sid``);
   macOS's does not (its ``sess`` is a kernel pointer), so there the process group id stands
   in (``pgid``: a session leader leads its group too). The cost, on macOS only: a job an
   interactive shell put in the background (its own group) and left behind is not cleaned.
   Also left alone, rightly: anything detached on purpose with ``setsid``.
2. What a manager says it runs, for the daemons that double-fork out of their session: on
   Linux a process in a systemd ``.service`` cgroup (``/proc/PID/cgroup``, read with ``grep``
   over the executor, so over SSH too); on macOS the pids ``launchctl list`` reports; and the
   processes of this machine's configured ``process`` services (``pgrep -x`` as their status).

Those checks run only for the few candidates, and a check that cannot run excludes nothing
more (the leader rule still holds). A machine that cannot be reached is reported, not fatal.
The run is a warning when anything was found. Patterns that are not valid regular expressions
fail the run before anything is done.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from core.config import MachineConfig, ServiceConfig
from core.errors import ClawopsError, InputError
from core.executors import Executor
from core.ports import conflicts, listeners, service_owners
from jobs.base import JobContext, JobResult

ORPHAN_PARENTS = frozenset({1})  # where Linux init and macOS launchd adopt orphans


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    leader: int  # the session id (Linux) or process group id (macOS): see the docstring
    age: int  # seconds
    args: str


def ps_command(os_name: str) -> list[str]:
    # macOS ps has no etimes: it prints etime ([[dd-]hh:]mm:ss) instead, and no session id.
    # -ww: never cut the command line at the terminal width (ps honours $COLUMNS even without
    # a terminal).
    if os_name == "macos":
        return ["ps", "-ww", "-axo", "pid=,ppid=,pgid=,etime=,args="]
    return ["ps", "-ww", "-eo", "pid=,ppid=,sid=,etimes=,args="]


def parse_etime(value: str) -> int:
    """``[[dd-]hh:]mm:ss`` (or plain seconds, Linux's etimes) -> seconds."""
    if value.isdigit():
        return int(value)
    match = re.fullmatch(r"(?:(?:(\d+)-)?(\d+):)?(\d+):(\d+)", value)
    if match is None:
        raise ValueError(f"not an elapsed time: {value!r}")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_ps(output: str) -> list[Proc]:
    found = []
    for line in output.splitlines():
        parts = line.split(None, 4)
        if len(parts) < 4:
            continue
        try:
            pid, ppid, leader, age = int(parts[0]), int(parts[1]), int(parts[2]), parts[3]
            found.append(
                Proc(pid, ppid, leader, parse_etime(age), parts[4] if len(parts) > 4 else "")
            )
        except ValueError:
            continue  # a header or a garbled line: not a process we could act on
    return found


def orphans(procs: list[Proc], patterns: list[re.Pattern[str]], min_age: timedelta,
            parents: frozenset[int] = ORPHAN_PARENTS) -> list[Proc]:  # fmt: skip
    """Old children of ``parents`` matching a pattern, except session (or group) leaders."""
    oldest = min_age.total_seconds()
    return [
        p for p in procs
        if p.ppid in parents and p.pid != p.leader and p.age >= oldest
        and any(r.search(p.args) for r in patterns)
    ]  # fmt: skip


def service_cgroup(cgroups: str) -> set[int]:
    """Pids whose cgroup is a systemd service, from ``grep -H '' /proc/PID/cgroup ...``."""
    found = set()
    for line in cgroups.splitlines():
        match = re.fullmatch(r"/proc/(\d+)/cgroup:[^:]*:[^:]*:(.*)", line.strip())
        if match and match.group(2).rstrip("/").rsplit("/", 1)[-1].endswith(".service"):
            found.add(int(match.group(1)))
    return found


def launchd_pids(listing: str) -> set[int]:
    """The pids of running jobs in ``launchctl list`` (``PID  Status  Label``; ``-``: none)."""
    return {int(line.split()[0]) for line in listing.splitlines() if line[:1].isdigit()}


async def managed(
    executor: Executor, machine: MachineConfig, units: list[str], candidates: list[Proc]
) -> set[int]:
    """Which candidates a service manager says it runs (checks that fail add nothing)."""
    found: set[int] = set()
    if machine.os == "linux":
        files = [f"/proc/{p.pid}/cgroup" for p in candidates]
        listed = await executor.run(["grep", "-H", "", *files])
        found |= service_cgroup(listed.stdout)  # exit 2 only says some process ended since
    elif machine.os == "macos":
        listed = await executor.run(["launchctl", "list"])
        if listed.ok:
            found |= launchd_pids(listed.stdout)
    for unit in units:
        listed = await executor.run(["pgrep", "-x", unit])
        found |= {int(p) for p in listed.stdout.split() if p.isdigit()}
    return found


def compile_patterns(patterns: list[str]) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise InputError(
                f"jobs.cleaner.orphan_patterns: {pattern!r} is not valid: {exc}"
            ) from None
    return compiled


def _plain_process(service: ServiceConfig, machine: str) -> bool:
    return service.machine == machine and service.manager == "process"


async def _simulators(executor: Executor, threshold: int, found: dict[str, Any]) -> None:
    result = await executor.run(["pgrep", "-f", "CoreSimulator"])
    if result.timed_out or result.exit_status not in (0, 1):
        found["errors"].append("cannot count CoreSimulator processes")
        return
    found["simulators"] = count = len(result.stdout.split())
    if count > threshold:
        shutdown = await executor.run(["xcrun", "simctl", "shutdown", "all"], timeout=120)
        found["simulators_shut_down"] = shutdown.ok
        if not shutdown.ok:
            found["errors"].append(f"xcrun simctl shutdown all: {shutdown.stderr.strip()[-200:]}")


async def clean_machine(
    ctx: JobContext, machine: MachineConfig, patterns: list[re.Pattern[str]]
) -> dict[str, Any]:
    settings = ctx.config.jobs.cleaner
    executor = ctx.fleet.executor(machine.name)
    found: dict[str, Any] = {"orphans": [], "killed": [], "conflicts": [], "errors": []}
    try:
        if machine.os == "macos":
            await _simulators(executor, settings.simulator_threshold, found)
        listed = await executor.run(ps_command(machine.os))
        if listed.ok:
            hits = orphans(parse_ps(listed.stdout), patterns, settings.orphan_min_age)
            if hits:
                services = ctx.config.services
                units = [s.unit_name for s in services if _plain_process(s, machine.name)]
                kept = await managed(executor, machine, units, hits)
                hits = [p for p in hits if p.pid not in kept]
            found["orphans"] = [asdict(p) for p in hits]
            if hits and settings.kill_orphans:
                pids = [str(p.pid) for p in hits]
                ended = await executor.run(["kill", "-TERM", *pids])
                found["killed"] = [p.pid for p in hits] if ended.ok else []
                if not ended.ok:
                    found["errors"].append(f"kill: {ended.stderr.strip()[-200:]}")
        else:
            found["errors"].append("cannot list processes")
        held = await listeners(machine, executor)
        owners = await service_owners(ctx.config, machine, executor)
        problems = conflicts(ctx.config, machine.name, held, owners)
        found["conflicts"] = [c.message for c in problems]
    except ClawopsError as exc:
        found["errors"].append(str(exc))
    return found


def _line(name: str, found: dict[str, Any]) -> str:
    parts = []
    if found.get("simulators_shut_down") is not None:
        parts.append(f"{found['simulators']} simulators, shut down")
    if found["orphans"]:
        verb = "killed" if found["killed"] else "found"
        parts.append(f"{len(found['orphans'])} orphan(s) {verb}")
    if found["conflicts"]:
        parts.append(f"{len(found['conflicts'])} port conflict(s)")
    parts += found["errors"]
    return f"{name}: {', '.join(parts) or 'clean'}"


async def cleaner(ctx: JobContext) -> JobResult:
    patterns = compile_patterns(ctx.config.jobs.cleaner.orphan_patterns)
    unix = [m for m in ctx.fleet.machines if m.os != "windows" and m.runs_commands]
    no_ssh = [m.name for m in ctx.fleet.machines if m.os != "windows" and not m.runs_commands]
    results = await asyncio.gather(*(clean_machine(ctx, m, patterns) for m in unix))
    machines = {m.name: found for m, found in zip(unix, results, strict=True)}
    dirty = any(
        f["orphans"] or f["conflicts"] or f["errors"] or f.get("simulators_shut_down") is not None
        for f in results
    )
    lines = [_line(name, found) for name, found in machines.items()]
    lines += [f"{name}: skipped (no SSH)" for name in no_ssh]
    data: dict[str, Any] = {"machines": machines}
    if no_ssh:
        data["no_ssh"] = no_ssh
    return JobResult("warning" if dirty else "ok", "; ".join(lines), data)
