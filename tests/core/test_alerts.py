"""The alert state machine on SQLite and PostgreSQL, including two nodes at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from core.alerts import AlertPolicy, Alerts
from core.config import AlertsConfig
from core.db import Database
from core.tables import utcnow


@pytest.fixture
def alerts(db: Database) -> Alerts:
    return Alerts(db, warning_repeats=3)


async def test_a_critical_takes_the_key_down_once_and_recovery_is_one_flip(alerts):
    assert await alerts.observe("job:healer", "ok", "fine") is None
    down = await alerts.observe("job:healer", "critical", "gateway crashed")
    assert down is not None and (down.old_state, down.new_state) == ("up", "down")
    assert await alerts.observe("job:healer", "critical", "still crashed") is None
    up = await alerts.observe("job:healer", "ok", "restarted")
    assert up is not None and up.new_state == "up"
    assert [(f.key, f.new_state) for f in await alerts.pending()] == [
        ("job:healer", "down"), ("job:healer", "up"),
    ]  # fmt: skip


async def test_warnings_alert_only_when_they_repeat(alerts):
    assert await alerts.observe("job:cleaner", "warning", "1") is None
    assert await alerts.observe("job:cleaner", "warning", "2") is None
    flip = await alerts.observe("job:cleaner", "warning", "3")
    assert flip is not None and flip.new_state == "down" and flip.reason == "3"


async def test_an_ok_in_between_resets_the_warning_count(alerts):
    for status in ("warning", "warning", "ok", "warning", "warning"):
        assert await alerts.observe("k", status, status) is None
    assert (await alerts.state("k")).failures == 2  # type: ignore[union-attr]


async def test_thresholds_above_one_need_consecutive_observations(db):
    config = AlertsConfig(failure_threshold=2, success_threshold=3)
    alerts = Alerts(db, policy=AlertPolicy(config))
    assert await alerts.observe("svc", "critical", "a") is None
    assert (await alerts.observe("svc", "critical", "b")).new_state == "down"  # type: ignore[union-attr]
    assert await alerts.observe("svc", "ok", "1") is None
    assert await alerts.observe("svc", "ok", "2") is None
    assert (await alerts.observe("svc", "ok", "3")).new_state == "up"  # type: ignore[union-attr]


async def test_a_flip_is_claimed_for_notification_once(alerts):
    flip = await alerts.observe("k", "critical", "x")
    assert flip is not None
    assert await alerts.mark_notified(flip.id) is True
    assert await alerts.mark_notified(flip.id) is False
    assert await alerts.pending() == []


async def test_two_nodes_observing_one_key_at_once_make_exactly_one_flip(db):
    nodes = [Alerts(db), Alerts(db)]
    results = await asyncio.gather(
        *(nodes[i % 2].observe("machine:mini", "critical", f"#{i}") for i in range(40))
    )
    assert len([r for r in results if r is not None]) == 1
    state = await nodes[0].state("machine:mini")
    assert state is not None and state.state == "down" and state.failures == 40


async def test_a_muted_key_still_changes_state_but_nothing_is_sent(alerts):
    await alerts.mute(utcnow() + timedelta(minutes=30), key="job:rnd")
    down = await alerts.observe("job:rnd", "critical", "late")
    assert down is not None and down.suppressed
    assert (await alerts.state("job:rnd")).state == "down"  # type: ignore[union-attr]
    other = await alerts.observe("job:ios-dev", "critical", "down")
    assert [f.id for f in await alerts.pending()] == [other.id]  # type: ignore[union-attr]
    await alerts.unmute()
    up = await alerts.observe("job:rnd", "ok", "back")
    assert up is not None and up.suppressed, "its going down was never announced"


async def test_a_global_mute_covers_every_key_and_ends_on_time(alerts):
    now = utcnow()
    await alerts.mute(now + timedelta(minutes=10), by=42)
    assert await alerts.is_muted("anything", now)
    assert not await alerts.is_muted("anything", now + timedelta(minutes=11))
    (mute,) = await alerts.active_mutes(now)
    assert mute.key is None and mute.created_by == 42
    assert await alerts.unmute() == 1
    assert await alerts.active_mutes() == [] and not await alerts.is_muted("anything")
    assert await alerts.unmute() == 0


async def test_a_mute_in_the_past_is_refused(alerts):
    with pytest.raises(ValueError):
        await alerts.mute(utcnow() - timedelta(seconds=1))


async def test_open_alerts_lists_down_keys(alerts):
    await alerts.observe("a", "critical", "x")
    await alerts.observe("b", "ok", "fine")
    assert [a.key for a in await alerts.open_alerts()] == ["a"]
