"""Check-in monitor: new → up → late → down from the status log, alerted once per transition."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import delete, insert

from core.tables import status_log, utcnow
from jobs.checkins import check, checkins_of
from jobs.registry import builtin_jobs

FAST = {"checkins": [{"job_id": "nightly", "period": "1s", "grace": "1s"}]}


async def started(harness, raw):
    h = harness(raw)
    for spec in builtin_jobs(h.config):
        if spec.name == "checkin_monitor":
            h.runner.add(spec)
    await h.statuslog.start()
    return h


async def monitor(h):
    _, result = await h.runner.run("checkin_monitor")
    assert result.outcome == "ok"
    return result


async def checkin_flips(h):
    return [
        (f.key, f.new_state) for f in await h.ctx.alerts.pending() if f.key.startswith("checkin:")
    ]


async def test_a_missed_check_in_alerts_once_and_its_next_post_recovers_it_once(harness):
    h = await started(harness, FAST)
    await h.ctx.statuslog.append("nightly", "ok", "backup done")
    result = await monitor(h)
    assert result.data == {"nightly": "up"} and result.summary == "up: nightly"
    assert await checkin_flips(h) == []

    await asyncio.sleep(2.2)  # past period + grace
    result = await monitor(h)
    assert result.data == {"nightly": "down"}
    flips = await h.ctx.alerts.pending()
    assert [(f.key, f.new_state) for f in flips] == [("checkin:nightly", "down")]
    assert flips[0].reason.startswith("missed check-in: nothing since ")
    assert "(period 1s, grace 1s)" in flips[0].reason
    assert h.woken == 1

    await monitor(h)  # still down: no second alert
    assert await checkin_flips(h) == [("checkin:nightly", "down")]
    assert h.woken == 1

    await h.ctx.statuslog.append("nightly", "ok", "backup done, late")
    result = await monitor(h)
    assert result.data == {"nightly": "up"}
    assert await checkin_flips(h) == [("checkin:nightly", "down"), ("checkin:nightly", "up")]
    assert h.woken == 2


async def test_a_check_in_never_seen_is_new_until_period_and_grace_have_passed(harness):
    h = await started(harness, FAST)
    result = await monitor(h)
    assert result.data == {"nightly": "new"} and result.summary == "new: nightly"
    first = await h.ctx.state.get("checkin:nightly")
    assert first is not None and "first_seen" in first
    await asyncio.sleep(1.2)
    assert (await monitor(h)).data == {"nightly": "new"}
    assert await checkin_flips(h) == []

    await asyncio.sleep(1.0)
    # A restarted node (a new context on the same database) does not start the wait over.
    again = await started(harness, FAST)
    assert (await monitor(again)).data == {"nightly": "down"}
    flips = await again.ctx.alerts.pending()
    assert [(f.key, f.new_state) for f in flips] == [("checkin:nightly", "down")]
    assert flips[0].reason == "missed check-in: never seen (period 1s, grace 1s)"
    assert await again.ctx.state.get("checkin:nightly") == first


async def test_a_check_in_whose_entries_were_purged_is_still_known_to_have_reported(harness):
    h = await started(harness, FAST)
    await h.ctx.statuslog.append("nightly", "warning", "backup slow")
    assert (await monitor(h)).data == {"nightly": "degraded"}
    async with h.ctx.db.begin() as conn:
        await conn.execute(delete(status_log))  # what retention does to old entries
    assert (await monitor(h)).data == {"nightly": "degraded"}
    await asyncio.sleep(2.2)
    assert (await monitor(h)).data == {"nightly": "down"}
    flips = await h.ctx.alerts.pending()
    assert [(f.key, f.new_state) for f in flips] == [("checkin:nightly", "down")]
    assert flips[0].reason.startswith("missed check-in: nothing since ")


async def test_cron_check_ins_are_due_at_the_first_fire_time_after_their_last_entry(harness):
    h = await started(harness, {"checkins": [
        {"job_id": "yearly", "cron": "0 0 1 1 *", "grace": "1m"},
        {"job_id": "minutely", "cron": "* * * * *", "timezone": "Europe/Berlin", "grace": "5m"},
        {"job_id": "hourly", "cron": "0 * * * *", "grace": "10m"},
    ]})  # fmt: skip
    now = utcnow()
    async with h.ctx.db.begin() as conn:
        await conn.execute(insert(status_log), [
            {"job_id": "yearly", "status": "ok", "message": "", "created_at": now},
            {"job_id": "minutely", "status": "ok", "message": "",
             "created_at": now - timedelta(minutes=2, seconds=30)},
            {"job_id": "hourly", "status": "ok", "message": "",
             "created_at": now - timedelta(hours=3)},
        ])  # fmt: skip
    result = await monitor(h)
    assert result.data == {"yearly": "up", "minutely": "late", "hourly": "down"}
    assert result.summary == "down: hourly; late: minutely; up: yearly"
    flips = await h.ctx.alerts.pending()
    assert [(f.key, f.new_state) for f in flips] == [("checkin:hourly", "down")]
    assert "(period cron 0 * * * *, grace 10m)" in flips[0].reason


async def test_a_critical_post_reports_down_and_a_warning_degraded_without_a_missed_alert(
    harness,
):
    h = await started(harness, {"checkins": [
        {"job_id": "crm", "period": "1h", "grace": "5m"},
        {"job_id": "rnd", "period": "1h", "grace": "5m"},
    ]})  # fmt: skip
    await h.ctx.statuslog.append("crm", "critical", "database gone")
    await h.ctx.statuslog.append("rnd", "warning", "slow")
    result = await monitor(h)
    assert result.data == {"crm": "down", "rnd": "degraded"}
    assert result.summary == "down: crm; degraded: rnd"
    # Those statuses alert under job:<jobId> (the sidecar); this key is for missing posts.
    assert await checkin_flips(h) == []
    assert (await h.ctx.alerts.state("checkin:crm")).state == "up"


async def test_with_no_check_ins_configured_it_says_so(harness):
    h = await started(harness, {})
    result = await monitor(h)
    assert result.summary == "no check-ins configured" and result.data == {}


async def test_a_paused_check_in_is_not_observed_and_the_summary_names_it(harness):
    h = await started(
        harness,
        {
            "checkins": [
                {"job_id": "nightly", "period": "1s", "grace": "1s"},
                {"job_id": "hourly", "period": "1h", "grace": "5m"},
            ]
        },
    )
    old = utcnow() - timedelta(hours=2)
    async with h.ctx.db.begin() as conn:
        await conn.execute(
            insert(status_log),
            [
                {"job_id": "nightly", "status": "ok", "message": "", "created_at": old},
            ],
        )
    checkins = checkins_of(h.ctx)
    await checkins.pause("nightly", 100)
    result = await monitor(h)
    assert result.data == {"nightly": "paused", "hourly": "new"}
    assert result.summary == "new: hourly; paused: nightly"
    # Long past its grace, fed to the monitor's check with an explicit time: still nothing.
    later = utcnow() + timedelta(days=1)
    for status in await checkins.statuses(later):
        await check(h.ctx, status, later)
    assert await checkin_flips(h) == [("checkin:hourly", "down")]
    assert h.woken == 1
