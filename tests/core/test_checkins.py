"""Check-in states, pause and resume on SQLite and PostgreSQL, including two nodes at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from core.alerts import Alerts
from core.checkins import PAUSED, Checkins
from core.config import CheckinConfig
from core.db import Database
from core.errors import Conflict, NotFound
from core.state import StateStore
from core.statuslog import StatusLog
from core.tables import utcnow

NIGHTLY = CheckinConfig(job_id="nightly", period=timedelta(seconds=2), grace=timedelta(seconds=1))
WEEKLY = CheckinConfig(job_id="weekly", period=timedelta(days=7), grace=timedelta(hours=1))


class Clock:
    """A monotonic clock a test moves by hand (for the paused set's cache)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def log(db: Database) -> AsyncIterator[StatusLog]:
    statuslog = StatusLog(db, "test")
    await statuslog.start()
    yield statuslog
    await statuslog.stop()


def node(db: Database, log: StatusLog, clock: Clock | None = None, **kw: Any) -> Checkins:
    """One node's view: its own Alerts (with the silencer registered) over the shared db."""
    alerts = Alerts(db)
    checkins = Checkins(
        [NIGHTLY, WEEKLY], StateStore(db), log, alerts, clock=clock or Clock(), **kw
    )
    alerts.silencers.append(checkins.silenced_by)
    return checkins


async def test_a_check_in_goes_new_up_late_down_and_a_warning_is_degraded(db, log):
    checkins = node(db, log)
    start = utcnow()
    new = await checkins.status("nightly", start)
    assert (new.state, new.last_ping, new.due) == ("new", None, start + timedelta(seconds=2))
    assert (await checkins.status("nightly", start + timedelta(seconds=2.5))).state == "new"
    assert (await checkins.status("nightly", start + timedelta(seconds=3.5))).state == "down"

    entry = await log.append("nightly", "ok", "done")
    at = entry.created_at
    up = await checkins.status("nightly", at + timedelta(seconds=1))
    assert (up.state, up.last_ping, up.last_status) == ("up", at, "ok")
    assert (await checkins.status("nightly", at + timedelta(seconds=2.5))).state == "late"
    down = await checkins.status("nightly", at + timedelta(seconds=3.5))
    assert (down.state, down.timing) == ("down", "down")

    entry = await log.append("nightly", "warning", "slow")
    degraded = await checkins.status("nightly", entry.created_at + timedelta(seconds=2.5))
    assert (degraded.state, degraded.timing) == ("degraded", "late")


async def test_a_paused_check_in_past_its_grace_stays_paused_and_resume_restarts_the_wait(db, log):
    checkins = node(db, log)
    entry = await log.append("nightly", "ok", "done")
    at = entry.created_at
    paused = await checkins.pause("nightly", 100, name="ops", at=at + timedelta(seconds=1))
    assert paused.state == "paused" and paused.due is None
    assert paused.pause is not None and (paused.pause.by, paused.pause.who) == (100, "@ops")
    a_day = at + timedelta(days=1)
    still = await checkins.status("nightly", a_day)
    assert (still.state, still.timing, still.last_ping) == ("paused", "paused", at)

    resumed = await checkins.resume("nightly", 100, at=a_day)
    # Paused for a day: not down the moment it is resumed, due one period after the resume.
    assert (resumed.state, resumed.due) == ("up", a_day + timedelta(seconds=2))
    assert (await checkins.status("nightly", a_day + timedelta(seconds=2.5))).state == "late"
    assert (await checkins.status("nightly", a_day + timedelta(seconds=3.5))).state == "down"
    # An entry after the resume counts from itself again.
    entry = await log.append("nightly", "ok", "back")
    assert (await checkins.status("nightly", entry.created_at + timedelta(seconds=1))).state == "up"


async def test_a_never_seen_check_in_resumed_is_new_until_its_wait_from_the_resume(db, log):
    checkins = node(db, log)
    start = utcnow()
    await checkins.status("weekly", start)
    await checkins.pause("weekly", 100, at=start)
    later = start + timedelta(days=30)
    resumed = await checkins.resume("weekly", 100, at=later)
    assert (resumed.state, resumed.due) == ("new", later + timedelta(days=7))
    assert (await checkins.status("weekly", later + timedelta(days=7, minutes=30))).state == "new"
    assert (await checkins.status("weekly", later + timedelta(days=8))).state == "down"


async def test_pausing_a_down_check_in_settles_its_alert_silently(db, log):
    checkins = node(db, log)
    alerts = checkins.alerts
    down = await alerts.observe("checkin:nightly", "critical", "missed check-in: never seen")
    assert down is not None and await alerts.mark_notified(down.id)
    await checkins.pause("nightly", 100)
    assert (await alerts.state("checkin:nightly")).state == "up"  # type: ignore[union-attr]
    assert await alerts.pending() == []  # stored already notified: nobody is told
    settled = await alerts.flip(down.id + 1)
    assert settled is not None and (settled.key, settled.new_state) == ("checkin:nightly", "up")
    assert settled.suppressed and settled.silenced_by == PAUSED


async def test_pause_and_resume_refuse_unknown_and_repeated_requests(db, log):
    checkins = node(db, log)
    with pytest.raises(NotFound, match="no check-in 'nope'; check-ins: nightly, weekly"):
        await checkins.pause("nope", 100)
    with pytest.raises(Conflict, match="not paused"):
        await checkins.resume("nightly", 100)
    await checkins.pause("nightly", 100, name="ops")
    with pytest.raises(Conflict, match=r"already paused \(by @ops since "):
        await checkins.pause("nightly", 101)
    assert (await checkins.status("nightly")).pause.by == 100  # type: ignore[union-attr]


async def test_entries_of_a_paused_check_in_do_not_alert_and_other_jobs_still_do(db, log):
    checkins = node(db, log)
    alerts = checkins.alerts
    await checkins.pause("nightly", 100)
    flip = await alerts.observe("job:nightly", "critical", "backup failed")
    assert flip is not None and flip.suppressed and flip.silenced_by == PAUSED
    other = await alerts.observe("job:rnd", "critical", "rnd failed")
    assert other is not None and not other.suppressed and other.silenced_by == ""
    missed = await alerts.observe("checkin:nightly", "critical", "missed")
    assert missed is not None and missed.suppressed
    assert [f.key for f in await alerts.pending()] == ["job:rnd"]
    assert await checkins.silenced_by("job:weekly", utcnow()) is None
    assert await checkins.silenced_by("service:here/nightly", utcnow()) is None


async def test_another_nodes_pause_is_seen_once_its_cached_paused_set_expires(db, log):
    clock = Clock()
    here, there = node(db, log), node(db, log, clock, cache_for=timedelta(seconds=2))
    assert await there.silenced_by("job:nightly", utcnow()) is None  # reads (and caches) it
    await here.pause("nightly", 100)
    assert await here.silenced_by("job:nightly", utcnow()) == PAUSED  # its own: at once
    clock.now += 1.0
    assert await there.silenced_by("job:nightly", utcnow()) is None  # still the cached copy
    clock.now += 1.0
    assert await there.silenced_by("job:nightly", utcnow()) == PAUSED
    await here.resume("nightly", 100)
    clock.now += 2.0
    assert await there.silenced_by("job:nightly", utcnow()) is None


async def test_two_nodes_pausing_at_once_one_wins_and_the_other_is_told(db, log):
    here, there = node(db, log), node(db, log)
    results = await asyncio.gather(
        here.pause("nightly", 100), there.pause("nightly", 101), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["CheckinStatus", "Conflict"]
    winner = 100 if not isinstance(results[0], Exception) else 101
    assert (await here.status("nightly")).pause.by == winner  # type: ignore[union-attr]
    assert (await there.status("nightly")).pause.by == winner  # type: ignore[union-attr]


async def test_pause_resume_and_the_monitors_bookkeeping_racing_on_two_nodes_stay_consistent(
    db, log
):
    here, there = node(db, log), node(db, log)
    await log.append("nightly", "ok", "done")
    done = {"pause": 0, "resume": 0}

    async def toggle(checkins: Checkins, by: int) -> None:
        for _ in range(8):
            for action in ("pause", "resume"):
                try:
                    await getattr(checkins, action)("nightly", by)
                    done[action] += 1
                except Conflict:
                    pass

    async def monitor(checkins: Checkins) -> None:
        for _ in range(8):
            await checkins.statuses()

    await asyncio.gather(toggle(here, 100), toggle(there, 101), monitor(here), monitor(there))
    # Every successful change was claimed on top of the one before: they alternate.
    value = await here.state.get("checkin:nightly")
    assert value is not None and "last_seen" in value and value["last_status"] == "ok"
    paused = "paused_at" in value
    assert done["pause"] - done["resume"] == int(paused) and done["pause"] >= 1
    assert ("paused_by" in value) == paused
    assert (await there.status("nightly")).state == ("paused" if paused else "up")
