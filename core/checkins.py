"""Check-ins: jobs that report to POST /api/log, what state each is in now, and pausing them.

The Healthchecks model. Each ``[[checkins]]`` job is expected ``period`` after its last entry
(or at the first ``cron`` fire time after it) and may be ``grace`` late:

- ``new``: never seen; not overdue until period and grace have passed counting from when a node
  first saw the check-in configured;
- ``up``: the last entry came in time; ``late``: past the expected time, within the grace;
- ``down``: past the expected time plus the grace (the check-in monitor alerts it under
  ``checkin:<job_id>``), or the latest entry was ``critical``; ``degraded``: it was ``warning``;
- ``paused``: an admin paused it: never late, never alerted, and the entries its job posts do
  not alert either (``silenced_by``, registered on ``Alerts.silencers``).

What must survive a restart and be the same on every node lives in the shared state under
``checkin:<job_id>``, one JSON value per check-in::

    first_seen            when a node first monitored it (the wait of a new check-in)
    last_seen, last_status  its newest entry (retention may purge a weekly job's only entry)
    paused_at, paused_by, paused_by_name   while paused
    resumed_at, resumed_by  the last resume: the wait starts over from it

Every change is a read, a change of that value, and a claim at the version read
(``StateStore.claim``): a node that loses the race reads again and applies its change on top,
so a pause on one node and the monitor's bookkeeping on another never undo each other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from apscheduler.triggers.cron import CronTrigger

from core.alerts import Alerts
from core.config import CheckinConfig
from core.durations import format_duration
from core.errors import Conflict, NotFound, StorageError
from core.state import StateStore
from core.statuslog import StatusLog
from core.tables import utcnow

State = Literal["new", "up", "late", "down", "degraded", "paused"]
# From the timing alone (what the monitor alerts on): a missed check-in is "down" here.
Timing = Literal["new", "up", "late", "down", "paused"]
STATES: tuple[State, ...] = ("down", "late", "degraded", "new", "up", "paused")
PAUSED = "paused check-in"
ATTEMPTS = 20
_PAUSE_FIELDS = ("paused_at", "paused_by", "paused_by_name")


@dataclass(frozen=True)
class Pause:
    at: datetime
    by: int | None
    name: str | None  # the pauser's username, when known

    @property
    def who(self) -> str:
        if self.name:
            return f"@{self.name}"
        return f"user {self.by}" if self.by is not None else "someone"


@dataclass(frozen=True)
class CheckinStatus:
    checkin: CheckinConfig
    state: State
    timing: Timing
    last_ping: datetime | None  # None: never reported
    last_status: str | None
    since: datetime  # what the wait counts from: the last ping, the first sight or a resume
    due: datetime | None  # when the next entry is expected; None while paused
    pause: Pause | None

    @property
    def job_id(self) -> str:
        return self.checkin.job_id


def state_key(checkin: CheckinConfig | str) -> str:
    """The key of a check-in, in the shared state and among the alerts."""
    job_id = checkin if isinstance(checkin, str) else checkin.job_id
    return f"checkin:{job_id}"


def expected_after(checkin: CheckinConfig, since: datetime) -> datetime:
    """When the next entry is due, given the last one (or the first sight) at ``since``."""
    if checkin.period is not None:
        return since + checkin.period
    assert checkin.cron is not None  # the config allows exactly one of them
    trigger = CronTrigger.from_crontab(checkin.cron, timezone=checkin.timezone or "UTC")
    # The first fire strictly after `since` (cron fires are whole seconds).
    due = trigger.get_next_fire_time(None, since + timedelta(microseconds=1))
    return due if due is not None else datetime.max.replace(tzinfo=since.tzinfo)


def schedule_text(checkin: CheckinConfig) -> str:
    every = (
        format_duration(checkin.period) if checkin.period is not None else f"cron {checkin.cron}"
    )
    return f"period {every}, grace {format_duration(checkin.grace)}"


class Checkins:
    """The configured check-ins over the shared state, the status log and the alerts.

    ``silenced_by`` answers from a copy of the paused set at most ``cache_for`` old (it runs
    for every flip); a pause or resume made through this object refreshes it at once, one made
    on another node is seen within ``cache_for``.
    """

    def __init__(
        self,
        checkins: Sequence[CheckinConfig],
        state: StateStore,
        statuslog: StatusLog,
        alerts: Alerts,
        *,
        cache_for: timedelta = timedelta(seconds=2),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configured = {c.job_id: c for c in checkins}
        self.state = state
        self.statuslog = statuslog
        self.alerts = alerts
        self.cache_for = cache_for.total_seconds()
        self._clock = clock
        self._paused: dict[str, Pause] | None = None
        self._paused_read = 0.0

    def reconfigure(self, checkins: Sequence[CheckinConfig]) -> None:
        """Take the check-ins of a reloaded config (their states and pauses are kept)."""
        self.configured = {c.job_id: c for c in checkins}

    def get(self, job_id: str) -> CheckinConfig:
        checkin = self.configured.get(job_id)
        if checkin is None:
            known = ", ".join(sorted(self.configured)) or "none configured"
            raise NotFound(f"no check-in {job_id!r}; check-ins: {known}")
        return checkin

    # -- evaluation ---------------------------------------------------------------------------

    async def status(
        self, checkin: CheckinConfig | str, now: datetime | None = None
    ) -> CheckinStatus:
        """The check-in's state at ``now``, after recording its newest entry in the shared
        state (so retention purging it, or a restart, does not make it look new again)."""
        checkin = self.get(checkin) if isinstance(checkin, str) else checkin
        now = now or utcnow()
        value = await self._sync(checkin, now)
        last_ping = _time(value.get("last_seen"))
        last_status = value.get("last_status") if last_ping is not None else None
        if last_ping is not None and not isinstance(last_status, str):
            last_status = "ok"
        since = last_ping or _time(value.get("first_seen")) or now
        resumed = _time(value.get("resumed_at"))
        if resumed is not None and resumed > since:
            since = resumed  # a resume starts the wait over
        pause = _pause(value)
        if pause is not None:
            return CheckinStatus(
                checkin, "paused", "paused", last_ping, last_status, since, None, pause
            )
        due = expected_after(checkin, since)
        ever = last_ping is not None
        timing: Timing
        if now <= due:
            timing = "up" if ever else "new"
        elif now <= due + checkin.grace:
            timing = "late" if ever else "new"
        else:
            timing = "down"
        state: State = timing
        if timing in ("up", "late") and last_status == "critical":
            state = "down"
        elif timing in ("up", "late") and last_status == "warning":
            state = "degraded"
        return CheckinStatus(checkin, state, timing, last_ping, last_status, since, due, None)

    async def statuses(self, now: datetime | None = None) -> list[CheckinStatus]:
        now = now or utcnow()
        return [await self.status(c, now) for c in self.configured.values()]

    async def _sync(self, checkin: CheckinConfig, now: datetime) -> dict[str, Any]:
        """The check-in's shared value, with its newest entry (or, never seen, the time it was
        first monitored) written into it when it is not there yet."""
        key = state_key(checkin)
        latest = await self.statuslog.recent(job_id=checkin.job_id, limit=1)
        value: dict[str, Any] = {}
        for attempt in range(ATTEMPTS):
            stored = await self.state.read(key)
            value = dict(stored.value) if stored is not None else {}
            wanted = dict(value)
            if latest:
                entry = latest[0]
                known = _time(value.get("last_seen"))
                if known is None or entry.created_at > known:
                    wanted.update(last_seen=entry.created_at.isoformat(), last_status=entry.status)
            elif "last_seen" not in value and "first_seen" not in value:
                wanted["first_seen"] = now.isoformat()
            if wanted == value:
                return value
            if await self.state.claim(key, wanted, stored.version if stored else None):
                return wanted
            await asyncio.sleep(0.005 * (attempt + 1))  # another node wrote it: read again
        return wanted  # best effort: what this node knows is still right for this answer

    # -- pause and resume ---------------------------------------------------------------------

    async def pause(
        self, job_id: str, by: int | None, *, name: str | None = None, at: datetime | None = None
    ) -> CheckinStatus:
        """Pause a check-in; if its missed-check-in alert is down, put it up without telling
        anyone. Conflict when it is paused already, NotFound when there is no such check-in."""
        checkin = self.get(job_id)
        at = at or utcnow()

        def paused(value: dict[str, Any]) -> dict[str, Any]:
            pause = _pause(value)
            if pause is not None:
                raise Conflict(f"check-in {job_id} is already paused ({_paused_text(pause)})")
            return {**value, "paused_at": at.isoformat(), "paused_by": by, "paused_by_name": name}

        await self._change(checkin, paused)
        await self.alerts.settle(state_key(checkin), PAUSED, at)
        return await self.status(checkin, at)

    async def resume(
        self, job_id: str, by: int | None, *, name: str | None = None, at: datetime | None = None
    ) -> CheckinStatus:
        """Resume a paused check-in: its wait starts over from ``at``. Conflict when it is not
        paused, NotFound when there is no such check-in."""
        checkin = self.get(job_id)
        at = at or utcnow()

        def resumed(value: dict[str, Any]) -> dict[str, Any]:
            if _pause(value) is None:
                raise Conflict(f"check-in {job_id} is not paused")
            kept = {k: v for k, v in value.items() if k not in _PAUSE_FIELDS}
            return {**kept, "resumed_at": at.isoformat(), "resumed_by": by}

        await self._change(checkin, resumed)
        return await self.status(checkin, at)

    async def _change(
        self, checkin: CheckinConfig, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        """Apply ``change`` to the check-in's shared value, claimed at the version it read
        (``change`` raises when the value it reads does not allow it)."""
        key = state_key(checkin)
        try:
            for attempt in range(ATTEMPTS):
                stored = await self.state.read(key)
                wanted = change(dict(stored.value) if stored is not None else {})
                if await self.state.claim(key, wanted, stored.version if stored else None):
                    return
                await asyncio.sleep(0.005 * (attempt + 1))  # another node wrote it: read again
            raise StorageError(f"could not change check-in {checkin.job_id}: too much contention")
        finally:
            self._paused = None  # read the paused set again, whatever happened

    # -- silencing ----------------------------------------------------------------------------

    async def paused(self) -> dict[str, Pause]:
        """The paused check-ins by job id, read at most ``cache_for`` ago."""
        now = self._clock()
        if self._paused is None or now - self._paused_read >= self.cache_for:
            found: dict[str, Pause] = {}
            for job_id in self.configured:
                stored = await self.state.get(state_key(job_id))
                pause = _pause(stored or {})
                if pause is not None:
                    found[job_id] = pause
            self._paused, self._paused_read = found, now
        return self._paused

    async def silenced_by(self, key: str, at: datetime) -> str | None:
        """A silencer for ``Alerts.silencers``: the missed-check-in key and the job key of a
        paused check-in are silenced ("paused check-in") whatever ``at`` is."""
        kind, _, job_id = key.partition(":")
        if kind not in ("checkin", "job") or job_id not in self.configured:
            return None
        return PAUSED if job_id in await self.paused() else None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _pause(value: dict[str, Any]) -> Pause | None:
    at = _time(value.get("paused_at"))
    if at is None:
        return None
    by, name = value.get("paused_by"), value.get("paused_by_name")
    return Pause(at, by if isinstance(by, int) else None, name if isinstance(name, str) else None)


def _paused_text(pause: Pause) -> str:
    return f"by {pause.who} since {pause.at:%Y-%m-%d %H:%M} UTC"
