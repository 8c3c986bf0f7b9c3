"""Verified restarts: one policy for /restart and the healer.

``restart_verified`` restarts a service through its manager and then watches it for its settle
window (``Config.settle_for``); ``watch`` is the watching alone (the healer uses it to see a
service through its ``min_uptime``). Steps:

1. Read the state once before the restart (its restart count; a failed read is not fatal), then
   restart through the manager. A manager that refuses raises: nothing restarted, nothing to watch.
2. Poll the manager until the window has passed, the last poll at or after its end. From the
   first poll that says running ("up"), each later poll that finds the service not running, with
   another pid, or with a higher restart count is a crash. Our own restart adds at most one to a
   manager's count (PM2 adds one when the app was running, systemd resets its count), so a count
   above the one read before plus one is a crash too, even one that happened before the first
   poll saw the service up.
3. At the end, run the health check (if the service has one).

The verdict is healthy when the service is running at the end, no crash was seen since it came
up, and its check passes. Why never earlier: a service that crashes three seconds after it starts
looks exactly like a healthy one for three seconds, so no shorter stretch proves that it stays
up; the window is what "stays up" means. An unhealthy verdict could be given at the first crash,
but the window is watched to its end anyway, so that the reason tells one crash from a crash
loop and the caller waits as long whatever the fault.

Each poll and the check are bounded by the machine's command timeout and the check's timeout,
so the whole takes the window plus at most one poll and one check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx

from core.config import ServiceConfig
from core.errors import ClawopsError, Unreachable
from core.fleet import Fleet
from core.health.checks import CheckResult, run_check
from core.services import ServiceStatus

log = logging.getLogger(__name__)
# Told how far a restart has come ("waiting for it to settle (4/10 s)"); it must not raise (a
# chat that cannot show progress is no reason to lose the verdict).
Progress = Callable[[str], Awaitable[None]]
MAX_POLL = 0.5  # seconds between two reads of the manager's state
MIN_POLL = 0.1


async def _silent(text: str) -> None:
    """No one is shown the progress."""


@dataclass(frozen=True)
class Verdict:
    """How a restarted service settled: healthy, or not and why (``reason``, for people)."""

    healthy: bool
    reason: str
    window: timedelta
    status: ServiceStatus | None = None  # the last state read
    check: CheckResult | None = None  # the check at the end (None: none, or not reached)
    crashes: int = 0


@dataclass
class Watch:
    """The crash count of one service over a run of state reads (fed by ``see``)."""

    before: int | None = None  # the restart count read before the restart, if any
    first: ServiceStatus | None = None  # the first read that found it running
    last: ServiceStatus | None = None
    events: int = 0  # going down, or a new pid, seen after ``first``

    def see(self, status: ServiceStatus) -> None:
        previous, self.last = self.last, status
        if self.first is None:
            if status.running:
                self.first = status
            return
        if previous is None or not previous.running:
            return
        if not status.running or (previous.pid and status.pid and previous.pid != status.pid):
            self.events += 1

    @property
    def crashes(self) -> int:
        """Crashes since it came up: the events seen, or the growth of the restart count over
        its base when that says more (crashes between two reads are only seen there)."""
        base = self.first.restarts if self.first is not None else None
        if self.before is not None:
            base = self.before + 1 if base is None else min(base, self.before + 1)
        now = self.last.restarts if self.last is not None else None
        grown = now - base if now is not None and base is not None else 0
        return max(self.events, grown)


async def restart_verified(
    fleet: Fleet,
    service: ServiceConfig,
    settle: timedelta,
    *,
    client: httpx.AsyncClient | None = None,
    progress: Progress | None = None,
) -> Verdict:
    """Restart ``service`` through its manager and watch it for ``settle`` (see the module)."""
    say = progress or _silent
    manager = fleet.manager(service)
    before: int | None = None
    try:
        before = (await manager.status()).restarts
    except Unreachable:
        raise  # the restart could not reach it either
    except ClawopsError as exc:  # the count is only a hint; the restart may still work
        log.info("%s@%s: state before the restart unknown: %s", service.name, service.machine, exc)
    await say(f"restarting {service.name}@{service.machine}…")
    await manager.restart()
    return await watch(fleet, service, settle, client=client, progress=say, before=before)


async def watch(
    fleet: Fleet,
    service: ServiceConfig,
    window: timedelta,
    *,
    client: httpx.AsyncClient | None = None,
    progress: Progress | None = None,
    since: ServiceStatus | None = None,
    before: int | None = None,
) -> Verdict:
    """Watch ``service`` for ``window`` and judge it (steps 2 and 3 of the module). ``since``: a
    state already seen running (it counts as the service having come up)."""
    say = progress or _silent
    seen = Watch(before=before)
    if since is not None:
        seen.see(since)
    manager = fleet.manager(service)
    seconds = max(window.total_seconds(), 0.0)
    total = f"{round(seconds, 1):g} s"
    poll = min(MAX_POLL, max(seconds / 8, MIN_POLL))
    started = time.monotonic()
    deadline = started + seconds
    error = ""
    shown = -1
    while True:
        try:
            seen.see(await manager.status())
            error = ""
        except ClawopsError as exc:
            error = str(exc)
        now = time.monotonic()
        if now >= deadline:
            break
        if int(now - started) != shown:
            shown = int(now - started)
            await say(f"waiting for it to settle ({shown}/{total})")
        await asyncio.sleep(min(poll, deadline - now))
    status, crashes = seen.last, seen.crashes

    def verdict(reason: str, check: CheckResult | None = None) -> Verdict:
        return Verdict(not reason, reason, window, status, check, crashes)

    if error:  # the last state is unknown: show none rather than an older one
        return Verdict(False, f"cannot read its state: {error}", window, None, None, crashes)
    assert status is not None  # a read without an error stored one
    within = f"within {total}"
    if not status.running:
        gone = _not_running(status)
        return verdict(f"crashed {_times(crashes)} {within}, {gone}" if crashes else gone)
    if crashes:
        return verdict(f"crashed {_times(crashes)} {within}")
    if service.health is None:
        return verdict("")
    await say("checking its health…")
    check = await _check(fleet, service, client)
    return verdict("" if check.ok else f"health check failed: {check.detail}", check)


async def _check(
    fleet: Fleet, service: ServiceConfig, client: httpx.AsyncClient | None
) -> CheckResult:
    machine = fleet.machine(service.machine)
    executor = fleet.executors.get(machine.name)  # None without SSH: http/tcp checks need none
    try:
        if client is None:
            async with httpx.AsyncClient(follow_redirects=False) as own:
                result = await run_check(service, machine, executor, own)
        else:
            result = await run_check(service, machine, executor, client)
    except ClawopsError as exc:
        return CheckResult(False, str(exc))
    assert result is not None  # only called for a service with a check
    return result


def _not_running(status: ServiceStatus) -> str:
    parts = [status.detail or status.state]
    if status.restarts:
        parts.append(f"↻{status.restarts}")
    return f"not running ({', '.join(parts)})"


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"
