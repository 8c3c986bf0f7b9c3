"""Retention of every growing table: rows just past their TTL go, rows just inside stay, and the
rows something still needs (a running job run, an unsent flip or message, a live lease, the
flips of a key that is down) stay whatever their age. Each table's rule runs on SQLite and
PostgreSQL; purges run with a small batch so the rules hold across batches."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Column, Table, event, insert, select

from core.alerts import Alerts
from core.alerts.mirror import open_alerts
from core.config import ResourceConfig, parse_config
from core.config._jobs import RetentionJob
from core.db import Database
from core.errors import ConfigError, DatabaseUnavailable
from core.jobruns import JobRuns
from core.resources import Leases
from core.tables import (
    alert_flips,
    alert_states,
    api_tokens,
    job_runs,
    leases,
    mutes,
    outbox,
    status_log,
    utcnow,
    web_logins,
    web_sessions,
)
from jobs.retention import purge_all
from tests.auxil.tcpproxy import TcpProxy, through

SETTINGS = RetentionJob(batch_size=2)
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


async def put(db: Database, table: Table, *rows: dict[str, Any]) -> None:
    async with db.begin() as conn:
        for row in rows:
            await conn.execute(insert(table).values(**row))


async def left(db: Database, column: Column[Any]) -> list[Any]:
    async with db.connect() as conn:
        return sorted((await conn.execute(select(column))).scalars().all())


async def purged(db: Database, now: datetime, table: str) -> int:
    counts = await purge_all(db, SETTINGS, now)
    assert all(n == 0 for name, n in counts.items() if name != table), counts
    return counts[table]


# -- job runs ----------------------------------------------------------------------------------


def run(job: str, label: str, ended: datetime | None, outcome: str = "ok") -> dict[str, Any]:
    started = (ended or utcnow()) - MINUTE
    return dict(
        job=job, node="test", started_at=started, ended_at=ended, outcome=outcome, summary=label
    )


async def test_job_runs_that_ended_past_the_ttl_go_but_each_jobs_newest_and_running_ones_stay(db):
    now, ttl = utcnow(), SETTINGS.job_runs_ttl
    await put(
        db,
        job_runs,
        run("heartbeat", "beat-old-1", now - ttl - 3 * MINUTE),
        run("heartbeat", "beat-old-2", now - ttl - 2 * MINUTE, "failed"),
        run("heartbeat", "beat-inside", now - ttl + MINUTE),
        run("heartbeat", "beat-newest", now - MINUTE),
        run("lume-update", "lume-older", now - ttl - 2 * DAY),
        # The only record /jobs and the status report have of this job: kept, however old.
        run("lume-update", "lume-newest", now - ttl - DAY, "failed"),
        # A run that never ended (its node died): it is not history yet.
        run("clear-sessions", "stuck", None, "running"),
    )
    assert await purged(db, now, "job_runs") == 3
    kept = await left(db, job_runs.c.summary)
    assert kept == ["beat-inside", "beat-newest", "lume-newest", "stuck"]
    newest = await JobRuns(db, "test").last_per_job()
    assert {job: r.summary for job, r in newest.items()} == {
        "heartbeat": "beat-newest",
        "lume-update": "lume-newest",
    }


# -- alert flips -------------------------------------------------------------------------------


def flip(key: str, change: str, at: datetime, reason: str, **more: Any) -> dict[str, Any]:
    """A flip row: ``change`` is "old>new"; settled (notified) at ``at`` unless told."""
    old, new = change.split(">")
    row = dict(key=key, old_state=old, new_state=new, at=at, reason=reason, notified_at=at)
    return row | more


def state(key: str, now_state: str, changed_at: datetime, **more: Any) -> dict[str, Any]:
    return dict(key=key, state=now_state, changed_at=changed_at, announced=now_state) | more


async def test_settled_flips_past_the_ttl_go_but_unsent_ones_and_what_readers_need_stay(db):
    now, ttl = utcnow(), SETTINGS.alert_flips_ttl
    past, inside = now - ttl - MINUTE, now - ttl + MINUTE

    def days(n: int) -> datetime:
        return now - ttl - n * DAY

    await put(
        db,
        alert_states,
        state("service:up", "up", past),
        state("service:down", "down", days(20)),
        state("checkin:held", "up", days(10), held=True),
    )
    quiet = {"suppressed": True}
    await put(
        db,
        alert_flips,
        flip("service:up", "up>down", past - MINUTE, "up-past-1"),
        flip("service:up", "down>up", past, "up-past-2", **quiet),
        flip("service:up", "up>down", inside, "up-inside"),
        # Never sent (Telegram away for a month): the notifier still has to send it.
        flip("service:up", "down>up", past, "up-unsent", notified_at=None),
        # Down again since its second going down: from that flip on, the peer mirror reads them.
        flip("service:down", "up>down", days(40), "down-before"),
        flip("service:down", "down>up", days(30), "down-recovered"),
        flip("service:down", "up>down", days(20), "down-went"),
        flip("service:down", "down>down", days(10), "down-reminder", kind="reminder"),
        # Held by a mute: its newest suppressed flip names the silence when the silence ends.
        flip("checkin:held", "up>down", days(12), "held-older", **quiet, silenced_by="paused"),
        flip("checkin:held", "down>up", days(10), "held-newest", **quiet, silenced_by="muted"),
    )
    alerts = Alerts(db)
    mirrored = await open_alerts(alerts)
    assert await purged(db, now, "alert_flips") == 5
    kept = ["up-inside", "up-unsent", "down-went", "down-reminder", "held-newest"]
    assert await left(db, alert_flips.c.reason) == sorted(kept)
    assert await open_alerts(alerts) == mirrored
    assert [f.reason for f in await alerts.pending()] == ["up-unsent"]


async def test_a_flip_kept_for_a_down_key_goes_once_the_key_is_up_again(db):
    now, ttl = utcnow(), SETTINGS.alert_flips_ttl
    await put(db, alert_states, state("service:x", "down", now - ttl - DAY))
    await put(db, alert_flips, flip("service:x", "up>down", now - ttl - DAY, "went"))
    assert await purged(db, now, "alert_flips") == 0
    settled = await Alerts(db).settle("service:x", "paused by an admin", at=now - ttl - MINUTE)
    assert settled is not None
    assert await purged(db, now, "alert_flips") == 2
    assert await left(db, alert_flips.c.reason) == []


# -- outbox ------------------------------------------------------------------------------------


async def test_sent_messages_past_the_ttl_go_and_unsent_ones_stay_whatever_their_age(db):
    now, ttl = utcnow(), SETTINGS.outbox_ttl

    def message(text: str, created: datetime, sent: datetime | None) -> dict[str, Any]:
        return {"node": "test", "text": text, "created_at": created, "sent_at": sent}

    await put(
        db,
        outbox,
        message("sent-past", now - ttl - DAY, now - ttl - MINUTE),
        message("sent-inside", now - ttl - DAY, now - ttl + MINUTE),
        message("unsent", now - 5 * ttl, None),
    )
    assert await purged(db, now, "outbox") == 1
    assert await left(db, outbox.c.text) == ["sent-inside", "unsent"]


# -- web sign-in -------------------------------------------------------------------------------


async def test_spent_logins_and_ended_sessions_past_the_ttl_go_and_api_tokens_never_do(db):
    now, ttl = utcnow(), SETTINGS.web_ttl
    past, inside = now - ttl - MINUTE, now - ttl + MINUTE

    def login(name: str, expires: datetime, used: datetime | None = None) -> dict[str, Any]:
        created = expires - 10 * MINUTE
        return dict(
            token_hash=name, user_id=1, created_at=created, expires_at=expires, used_at=used
        )

    def session(name: str, expires: datetime, revoked: datetime | None = None) -> dict[str, Any]:
        seen = expires - 7 * DAY
        row = dict(session_hash=name, user_id=1, created_at=seen, last_seen=seen)
        return row | dict(expires_at=expires, revoked_at=revoked)

    await put(
        db,
        web_logins,
        login("expired-past", past),
        login("expired-inside", inside),
        login("used-past", now + 5 * MINUTE, used=past),
        login("live", now + 5 * MINUTE),
    )
    await put(
        db,
        web_sessions,
        session("expired-past", past),
        session("expired-inside", inside),
        session("revoked-past", now + DAY, revoked=past),
        session("revoked-inside", now + DAY, revoked=inside),
        session("live", now + DAY),
    )
    revoked = dict(revoked_at=now - 300 * DAY, created_at=now - 400 * DAY)
    await put(db, api_tokens, dict(name="ci", token_hash="t", user_id=1, **revoked))
    counts = await purge_all(db, SETTINGS, now)
    assert (counts["web_logins"], counts["web_sessions"]) == (2, 2)
    assert await left(db, web_logins.c.token_hash) == ["expired-inside", "live"]
    sessions = await left(db, web_sessions.c.session_hash)
    assert sessions == ["expired-inside", "live", "revoked-inside"]
    assert await left(db, api_tokens.c.name) == ["ci"]


# -- leases ------------------------------------------------------------------------------------


async def test_leases_expired_past_the_ttl_go_and_held_or_waiting_ones_stay(db):
    pool = Leases(db, [ResourceConfig(name="ollama", max_concurrent=1)])
    held = await pool.enqueue("ollama", "healer")
    assert (await pool.try_acquire(held.lease)).held
    waiting = await pool.enqueue("ollama", "bench")
    now, ttl = utcnow(), SETTINGS.leases_ttl

    def lease(name: str, expires: datetime) -> dict[str, Any]:
        beat = expires - MINUTE
        row = dict(lease=name, resource="ollama", holder=name, state="held", queued_at=beat)
        return row | dict(heartbeat_at=beat, expires_at=expires)

    await put(
        db, leases, lease("dead-past", now - ttl - MINUTE), lease("dead-inside", now - MINUTE)
    )
    assert await purged(db, now, "leases") == 1
    assert await left(db, leases.c.lease) == sorted([held.lease, waiting.lease, "dead-inside"])
    await pool.heartbeat(held.lease)  # the holder never noticed


# -- mutes -------------------------------------------------------------------------------------


async def test_mutes_over_past_the_ttl_go_and_active_ones_stay(db):
    now, ttl = utcnow(), SETTINGS.mutes_ttl

    def mute(key: str, until: datetime, ended: datetime | None = None) -> dict[str, Any]:
        return {"key": key, "until": until, "created_at": until - DAY, "ended_at": ended}

    await put(
        db,
        mutes,
        mute("ran-out-past", now - ttl - MINUTE),
        mute("ran-out-inside", now - ttl + MINUTE),
        mute("unmuted-past", now + DAY, ended=now - ttl - MINUTE),
        mute("unmuted-inside", now + DAY, ended=now - ttl + MINUTE),
    )
    active = await Alerts(db).mute(now + 400 * DAY, key="active")
    assert await purged(db, now, "mutes") == 2
    assert await left(db, mutes.c.key) == ["active", "ran-out-inside", "unmuted-inside"]
    assert [m.id for m in await Alerts(db).active_mutes()] == [active]


# -- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0s", "-1d", "soon"])
def test_a_ttl_that_is_not_a_positive_duration_is_refused_with_its_key(value):
    with pytest.raises(ConfigError, match=r"jobs\.retention\.outbox_ttl"):
        parse_config({"jobs": {"retention": {"outbox_ttl": value}}})


def test_the_ttls_default_to_the_documented_values():
    settings = parse_config({}).jobs.retention
    ttls = (settings.job_runs_ttl, settings.alert_flips_ttl, settings.outbox_ttl)
    assert ttls == (14 * DAY, 30 * DAY, 7 * DAY)
    assert (settings.web_ttl, settings.leases_ttl, settings.mutes_ttl) == (7 * DAY, DAY, 30 * DAY)


# -- a silent database -------------------------------------------------------------------------

# Far above the 1 s database timeout: reaching it means the purge hung.
HUNG = 30


async def test_a_purge_over_a_silent_database_fails_within_the_timeout_and_the_next_goes_on(
    pg_url,
):
    direct = Database(pg_url)
    await direct.upgrade()
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    silent = Database(through(pg_url, proxy), timeout=1)
    try:
        old = utcnow() - 3 * DAY
        async with direct.begin() as conn:
            await conn.execute(status_log.delete())
        await put(
            direct,
            status_log,
            *[
                {"job_id": "gone", "status": "ok", "message": str(i), "created_at": old}
                for i in range(5)
            ],
        )
        deletes = 0

        def silence_on_the_second_batch(conn, cursor, statement, *args: Any) -> None:
            nonlocal deletes
            if statement.lstrip().upper().startswith("DELETE"):
                deletes += 1
                if deletes == 2:
                    proxy.silence()

        event.listen(
            silent.engine.sync_engine, "before_cursor_execute", silence_on_the_second_batch
        )
        with pytest.raises(DatabaseUnavailable, match="no answer within 1s"):
            await asyncio.wait_for(purge_all(silent, SETTINGS), HUNG)
        # The first batch was committed; the rest waits for the next run.
        assert len(await left(direct, status_log.c.message)) == 3
        proxy.resume()
        assert (await purge_all(silent, SETTINGS))["status_log"] == 3
        assert await left(direct, status_log.c.message) == []
    finally:
        proxy.resume()
        await silent.close()
        await direct.close()
        await proxy.stop()
