"""Mirroring the failover peer's open alerts (core.alerts.mirror), on SQLite and PostgreSQL:
separate databases (the cases of the module docstring) and one shared database (no writes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from core.alerts import Alerts
from core.alerts.mirror import AlertMirror, mirror, open_alerts, parse_report
from core.db import Database
from core.state import StateStore
from core.tables import alert_flips, alert_states, utcnow


@pytest.fixture
async def peer_db(tmp_path: Path) -> AsyncIterator[Database]:
    """The peer's own database (SQLite), beside the ``db`` fixture's (SQLite or PostgreSQL)."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'peer.db'}")
    await database.upgrade()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def here(db: Database) -> AlertMirror:
    return AlertMirror(Alerts(db), StateStore(db))


@pytest.fixture
def peer(peer_db: Database) -> AlertMirror:
    return AlertMirror(Alerts(peer_db), StateStore(peer_db))


async def answer(node: AlertMirror, active: bool = True) -> dict[str, Any]:
    """What the node's GET /api/alerts answers (bot.node adds node and active the same way)."""
    return {"node": "alpha", "active": active, **(await node.report())}


async def sent(alerts: Alerts) -> None:
    """The node's notifier sends everything pending."""
    for flip in await alerts.pending():
        await alerts.mark_notified(flip.id)


async def flips(alerts: Alerts, key: str) -> list[tuple[str, str, str, bool, bool]]:
    async with alerts.db.connect() as conn:
        rows = (
            await conn.execute(
                select(alert_flips).where(alert_flips.c.key == key).order_by(alert_flips.c.id)
            )
        ).all()
    return [
        (r.kind, r.old_state, r.new_state, r.notified_at is not None, bool(r.suppressed))
        for r in rows
    ]


async def test_a_key_the_peer_announced_goes_down_here_already_notified(here, peer):
    await peer.alerts.observe("service:mini/gw", "critical", "port 8080 refused")
    await sent(peer.alerts)
    result = await here.apply(await answer(peer))
    assert result.down == ("service:mini/gw",) and not result.shared
    state = await here.alerts.state("service:mini/gw")
    assert state is not None and state.state == "down" and state.last_message == "port 8080 refused"
    assert await flips(here.alerts, "service:mini/gw") == [("mirrored", "up", "down", True, False)]
    assert await here.alerts.pending() == []
    again = await here.apply(await answer(peer))  # mirroring again changes nothing
    assert not again.changed and await here.alerts.pending() == []
    # This node's own checks agree: no flip; its recovery is one, sent (the peer had said down).
    assert await here.alerts.observe("service:mini/gw", "critical", "still refused") is None
    up = await here.alerts.observe("service:mini/gw", "ok", "healthy again")
    assert up is not None and not up.suppressed
    assert [f.id for f in await here.alerts.pending()] == [up.id]


async def test_a_key_the_peer_has_not_announced_yet_stays_pending_until_it_has(here, peer):
    await peer.alerts.observe("job:backup", "critical", "exit 1")
    await here.apply(await answer(peer))
    pending = await here.alerts.pending()
    assert [(f.key, f.kind, f.new_state) for f in pending] == [("job:backup", "mirrored", "down")]
    await sent(peer.alerts)  # the peer's notifier sends it: the next mirror settles this node's
    result = await here.apply(await answer(peer))
    assert result.settled == 1 and result.down == () and await here.alerts.pending() == []


async def test_a_key_down_here_but_up_at_the_peer_goes_up_silently(here, peer):
    await here.alerts.observe("machine:mini", "critical", "unreachable")  # pending here
    await peer.alerts.observe("machine:mini", "critical", "unreachable")
    await peer.alerts.observe("machine:mini", "ok", "reachable again")
    await sent(peer.alerts)
    result = await here.apply(await answer(peer))
    assert result.up == ("machine:mini",) and result.settled == 1
    state = await here.alerts.state("machine:mini")
    assert state is not None and state.state == "up"
    assert await flips(here.alerts, "machine:mini") == [
        ("flip", "up", "down", True, False),
        ("mirrored", "down", "up", True, True),
    ]
    assert await here.alerts.pending() == []


async def test_pending_flips_of_keys_up_at_the_peer_are_settled_and_both_down_is_only_settled(
    here, peer
):
    # A recovery this node recorded that the peer already sent.
    await here.alerts.observe("job:a", "critical", "x")
    await sent(here.alerts)
    await here.alerts.observe("job:a", "ok", "fine")
    # Down at both, the peer announced it; down at both, the peer did not yet.
    await here.alerts.observe("job:b", "critical", "here")
    await here.alerts.observe("job:c", "critical", "here")
    await peer.alerts.observe("job:b", "critical", "there")
    await sent(peer.alerts)
    await peer.alerts.observe("job:c", "critical", "there")
    before = await changed_at(here.alerts.db, "job:b")
    result = await here.apply(await answer(peer))
    assert (result.down, result.up, result.settled) == ((), (), 2)
    assert [(f.key, f.new_state) for f in await here.alerts.pending()] == [("job:c", "down")]
    assert await changed_at(here.alerts.db, "job:b") == before  # its state is left alone
    assert await flips(here.alerts, "job:b") == [("flip", "up", "down", True, False)]


async def test_a_muted_key_at_the_peer_is_mirrored_silenced_and_its_recovery_stays_silent(
    here, peer
):
    await peer.alerts.mute(utcnow() + timedelta(hours=1), key="mini")
    await peer.alerts.observe("machine:mini", "critical", "planned reboot")
    report = await answer(peer)
    assert report["alerts"][0]["announced"] is True
    assert report["alerts"][0]["silenced_by"].startswith("muted until")
    await here.apply(report)
    assert await flips(here.alerts, "machine:mini") == [("mirrored", "up", "down", True, True)]
    up = await here.alerts.observe("machine:mini", "ok", "back")
    assert up is not None and up.suppressed  # nobody was told it was down


async def test_the_peers_mutes_hold_here_and_end_here_when_they_end_there(here, peer):
    await peer.alerts.mute(utcnow() + timedelta(hours=1), key="mini", by=7)
    await peer.alerts.mute(utcnow() + timedelta(minutes=30), by=8)
    result = await here.apply(await answer(peer))
    assert (result.mutes_added, result.mutes_ended) == (2, 0)
    mine = sorted(await here.alerts.active_mutes(), key=lambda m: m.key or "")
    assert [(m.key, m.created_by) for m in mine] == [(None, 8), ("mini", 7)]
    again = await here.apply(await answer(peer))
    assert (again.mutes_added, again.mutes_ended) == (0, 0) and not again.changed
    assert await peer.alerts.unmute("mini") == 1
    ended = await here.apply(await answer(peer))
    assert (ended.mutes_added, ended.mutes_ended) == (0, 1)
    assert [m.key for m in await here.alerts.active_mutes()] == [None]


async def test_after_a_takeover_a_key_held_by_the_peers_mute_stays_silent_until_it_ends(here, peer):
    until = utcnow() + timedelta(minutes=30)
    await peer.alerts.mute(until, key="machine:mini")
    await peer.alerts.observe("machine:mini", "critical", "planned reboot")
    await here.apply(await answer(peer))
    # This node now talks to Telegram: its notifier looks for follow-ups.
    assert await here.alerts.follow_ups() == []
    (told,) = await here.alerts.follow_ups(until + timedelta(seconds=1))
    assert (told.kind, told.key, told.new_state) == ("unsilenced", "machine:mini", "down")


async def test_the_failovers_own_keys_are_not_mirrored(here, peer):
    await peer.alerts.observe("failover:split-brain", "critical", "409 Conflict on alpha")
    await here.alerts.observe("failover:split-brain", "critical", "409 Conflict on beta")
    result = await here.apply(await answer(peer))
    assert (result.down, result.up) == ((), ())
    state = await here.alerts.state("failover:split-brain")
    assert state is not None and state.last_message == "409 Conflict on beta"


async def test_a_shared_database_is_left_untouched(db):
    primary = AlertMirror(Alerts(db), StateStore(db))
    standby = AlertMirror(Alerts(db), StateStore(db))
    await primary.alerts.observe("job:a", "critical", "x")
    await sent(primary.alerts)
    await primary.alerts.observe("job:a", "ok", "fine")  # pending: the primary's to send
    await primary.alerts.observe("job:b", "critical", "y")  # pending too
    snapshot = await everything(db)
    result = await standby.apply(await answer(primary))
    assert result.shared and not result.changed
    assert await everything(db) == snapshot
    assert [f.key for f in await primary.alerts.pending()] == ["job:a", "job:b"]
    # Even without the database's name, the states agree: the state changes write nothing.
    held = await open_alerts(primary.alerts)
    assert [a.announced for a in held] == [False]
    plain = await mirror(standby.alerts, held, peer="alpha")
    assert (plain.down, plain.up) == ((), ())


async def test_malformed_answers_are_refused_whole(here, peer):
    good = await answer(peer)
    now = utcnow().isoformat()

    def one(**item: Any) -> dict[str, Any]:
        return {
            **good,
            "alerts": [{"key": "k", "since": now, "message": "", "announced": True, **item}],
        }

    bad: list[Any] = [
        [],
        {**good, "database": ""},
        {**good, "active": "yes"},
        {**good, "alerts": {}},
        {**good, "alerts": ["k"]},
        one(key=""),
        one(key="k" * 201),
        one(since="yesterday"),
        one(since="2025-01-01T00:00:00"),
        one(announced="no"),
        one(message=None),
        {**good, "mutes": {}},
        {**good, "mutes": [{"key": "", "until": now}]},
        {**good, "mutes": [{"key": None, "until": "2025-01-01T00:00:00"}]},
        {**good, "mutes": [{"key": None, "until": now, "by": True}]},
    ]
    for body in bad:
        with pytest.raises(ValueError):
            parse_report(body)
    async with here.alerts.db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(alert_states))).scalar() == 0


async def changed_at(db: Database, key: str) -> Any:
    async with db.connect() as conn:
        return (
            await conn.execute(select(alert_states.c.changed_at).where(alert_states.c.key == key))
        ).scalar()


async def everything(db: Database) -> tuple[list[Any], list[Any]]:
    async with db.connect() as conn:
        states = (await conn.execute(select(alert_states).order_by(alert_states.c.key))).all()
        rows = (await conn.execute(select(alert_flips).order_by(alert_flips.c.id))).all()
    return [tuple(r) for r in states], [tuple(r) for r in rows]
