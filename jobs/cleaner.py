"""The cleaner: too many iOS simulators, orphaned dev processes, port conflicts (SPEC 4).

Per Unix machine (Windows machines are skipped), concurrently:

- macOS: count CoreSimulator processes (``pgrep -f CoreSimulator``); over
  ``simulator_threshold``, ``xcrun simctl shutdown all``;
- orphans: ``ps`` lists pid, parent, age and command line; an orphan is a process whose parent
  is PID 1 (launchd, or init: where the kernel reparents a process whose parent died), older
  than ``orphan_min_age``, whose command line matches one of ``orphan_patterns`` (regular
  expressions, searched). They are reported, and with ``kill_orphans`` sent SIGTERM — exactly
  those pids, nothing else;
- port conflicts: what listens against the configured ports and ranges (core.ports).

A machine that cannot be reached is reported, not fatal. The run is a warning when anything was
found. Patterns that are not valid regular expressions fail the run before anything is done.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from core.config import MachineConfig
from core.errors import ClawopsError, InputError
from core.executors import Executor
from core.ports import conflicts, listeners
from jobs.base import JobContext, JobResult

ORPHAN_PARENTS = frozenset({1})  # where Linux init and macOS launchd adopt orphans


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    age: int  # seconds
    args: str


def ps_command(os_name: str) -> list[str]:
    # macOS ps has no etimes: it prints etime ([[dd-]hh:]mm:ss) instead. -ww: never cut the
    # command line at the terminal width (ps honours $COLUMNS even without a terminal).
    if os_name == "macos":
        return ["ps", "-ww", "-axo", "pid=,ppid=,etime=,args="]
    return ["ps", "-ww", "-eo", "pid=,ppid=,etimes=,args="]


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
        parts = line.split(None, 3)
        if len(parts) < 3:
            continue
        try:
            found.append(Proc(int(parts[0]), int(parts[1]), parse_etime(parts[2]),
                              parts[3] if len(parts) > 3 else ""))  # fmt: skip
        except ValueError:
            continue  # a header or a garbled line: not a process we could act on
    return found


def orphans(procs: list[Proc], patterns: list[re.Pattern[str]], min_age: timedelta,
            parents: frozenset[int] = ORPHAN_PARENTS) -> list[Proc]:  # fmt: skip
    oldest = min_age.total_seconds()
    return [
        p for p in procs
        if p.ppid in parents and p.age >= oldest and any(r.search(p.args) for r in patterns)
    ]  # fmt: skip


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
        found["conflicts"] = [c.message for c in conflicts(ctx.config, machine.name, held)]
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
    unix = [m for m in ctx.fleet.machines if m.os != "windows"]
    results = await asyncio.gather(*(clean_machine(ctx, m, patterns) for m in unix))
    machines = {m.name: found for m, found in zip(unix, results, strict=True)}
    dirty = any(
        f["orphans"] or f["conflicts"] or f["errors"] or f.get("simulators_shut_down") is not None
        for f in results
    )
    summary = "; ".join(_line(name, found) for name, found in machines.items())
    return JobResult("warning" if dirty else "ok", summary, {"machines": machines})
