"""/checkins, /pause and /resume through the real bot, with the monitor and the sidecar."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import insert, select

from bot.node import Node
from core.localtelegram import LocalTelegram
from core.tables import alert_flips, status_log, utcnow
from tests.auxil.botnode import start_test_node
from tests.bot.test_bot import ADMIN, GROUP, VIEWER, audit_outcomes, say
from tests.bot.test_fleet_commands import confirmed, only

ALERTS = -700
FAST = {"period": "2s", "grace": "2s"}
CHECKINS = [
    {"job_id": "nightly", **FAST},
    {"job_id": "canary", **FAST},
    {"job_id": "fresh", "period": "1h", "grace": "5m"},
    {"job_id": "steady", "period": "1h", "grace": "5m"},
    {"job_id": "slowpoke", "period": "1m", "grace": "1h"},
    {"job_id": "wobbly", "cron": "0 * * * *", "grace": "10m"},
    {"job_id": "<b>odd</b>", "period": "1h", "grace": "5m"},
]


@pytest.fixture
async def node(tmp_path, monkeypatch, tg) -> AsyncIterator[Node]:
    running = await start_test_node(
        tmp_path, monkeypatch, tg, telegram={"alert_chat": ALERTS}, checkins=CHECKINS
    )
    yield running
    await running.stop()


async def ping(node: Node, job_id: str, status: str = "ok", ago: timedelta | None = None) -> None:
    """A status-log entry for ``job_id``, ``ago`` in the past (written as retention finds it)."""
    if ago is None:
        await node.statuslog.append(job_id, status, "")
        return
    row = {"job_id": job_id, "status": status, "message": "", "created_at": utcnow() - ago}
    async with node.db.begin() as conn:
        await conn.execute(insert(status_log), [row])


async def post(node: Node, job_id: str, status: str, message: str) -> None:
    url = f"http://127.0.0.1:{node.config.sidecar.port}/api/log"
    body = {"jobId": job_id, "status": status, "message": message}
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(url, json=body)).status_code == 201


async def alerted(tg: LocalTelegram, key: str, after: int, wait: float = 10.0) -> list[str]:
    """Every alert-chat message after seq ``after``, once one naming ``key`` has come."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        texts = [s.text for s in tg.sent if s.seq > after and s.chat_id == ALERTS]
        if any(key in t for t in texts):
            return texts
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"no alert for {key}: {texts}"
        last = tg.sent[-1].seq if tg.sent else 0
        await tg.wait_sent(last, min(left, 1.0), chat_id=ALERTS)


async def monitor(node: Node) -> dict[str, str]:
    _, result = await node.jobs.run("checkin_monitor")
    assert result.outcome == "ok" and result.data is not None
    return result.data


async def flips_of(node: Node, key: str) -> list[tuple[str, bool, str]]:
    query = select(alert_flips).where(alert_flips.c.key == key).order_by(alert_flips.c.id)
    async with node.db.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [(r.new_state, bool(r.suppressed), r.silenced_by) for r in rows]


async def test_checkins_shows_every_state_with_its_last_ping_and_schedule(node, tg):
    await ping(node, "steady")
    await ping(node, "slowpoke", ago=timedelta(minutes=2, seconds=5))
    await ping(node, "wobbly", "warning")
    await ping(node, "canary", ago=timedelta(hours=2, minutes=5))
    await ping(node, "nightly", ago=timedelta(hours=3))
    assert "⏸ Paused" in await confirmed(tg, "/pause nightly")
    text = only(await say(tg, GROUP, VIEWER, "/checkins"))
    lines = {line.split("</b>")[0]: line for line in text.splitlines() if "<b>" in line}
    assert lines["<b>Check-ins"].startswith("<b>Check-ins</b> (7)")
    assert lines["🆕 <b>fresh"].startswith("🆕 <b>fresh</b> · new · last ping never · due in ")
    assert "🟢 <b>steady</b> · up · last ping 0s ago · due in 59m" in lines["🟢 <b>steady"]
    assert "🟡 <b>slowpoke</b> · late · last ping 2m 5s ago · overdue 1m" in text
    assert "🟠 <b>wobbly</b> · degraded · last ping 0s ago · due in " in text
    assert "🔴 <b>canary</b> · down · last ping 2h 5m ago · overdue 2h 4m" in text
    paused = lines["⏸ <b>nightly"]
    assert paused.startswith("⏸ <b>nightly</b> · paused · last ping 3h ago · paused by @user100")
    assert "   period 2s, grace 2s" in text and "   period cron 0 * * * *, grace 10m" in text
    assert "<b>&lt;b&gt;odd&lt;/b&gt;</b> · new" in text  # a name is escaped


async def test_a_paused_check_in_past_its_grace_stays_paused_and_alerts_nothing(node, tg):
    for job_id in ("nightly", "canary"):
        await ping(node, job_id, ago=timedelta(hours=1))
    assert "never late" in await confirmed(tg, "/pause nightly")
    start = tg.sent[-1].seq
    states = await monitor(node)
    assert states["nightly"] == "paused" and states["canary"] == "down"
    _, result = await node.jobs.run("checkin_monitor")
    assert "paused: nightly" in result.summary and "down: canary" in result.summary
    # The unpaused one is alerted; by the time it is, the paused one would have been too.
    texts = await alerted(tg, "checkin:canary", start)
    assert not any("nightly" in t for t in texts), texts
    assert await flips_of(node, "checkin:nightly") == []
    status = await node.checkins.status("nightly", utcnow() + timedelta(days=1))
    assert status.state == "paused"


async def test_a_critical_post_for_a_paused_check_ins_job_does_not_alert(node, tg):
    assert "Paused" in await confirmed(tg, "/pause nightly")
    start = tg.sent[-1].seq
    await post(node, "nightly", "critical", "backup failed: disk full")
    await post(node, "canary", "critical", "canary died")
    texts = await alerted(tg, "job:canary", start)
    assert not any("nightly" in t or "disk full" in t for t in texts), texts
    assert await flips_of(node, "job:nightly") == [("down", True, "paused check-in")]


async def test_pausing_a_down_check_in_closes_its_alert_silently_and_resume_restarts_the_wait(
    node, tg
):
    await ping(node, "nightly", ago=timedelta(hours=1))
    start = tg.sent[-1].seq if tg.sent else 0
    assert (await monitor(node))["nightly"] == "down"
    await alerted(tg, "checkin:nightly", start)
    assert "Paused" in await confirmed(tg, "/pause nightly")
    assert (await node.alerts.state("checkin:nightly")).state == "up"
    assert [f[:2] for f in await flips_of(node, "checkin:nightly")] == [
        ("down", False),
        ("up", True),
    ]
    resumed = await confirmed(tg, "/resume nightly")
    assert resumed.startswith("▶️ Resumed check-in <b>nightly</b>: the wait starts over now")
    assert " UTC (in 2s), down after a further 2s." in resumed
    # An hour since its last ping, yet not down: the wait counts from the resume.
    since = (await node.checkins.status("nightly")).since
    assert (await node.checkins.status("nightly", since + timedelta(seconds=1))).state == "up"
    assert (await node.checkins.status("nightly", since + timedelta(seconds=3))).state == "late"
    assert (await node.checkins.status("nightly", since + timedelta(seconds=5))).state == "down"
    outcomes = await audit_outcomes(node, 4)
    assert ("pause", "ok") in outcomes and ("resume", "ok") in outcomes


async def test_pause_refuses_an_unknown_or_already_paused_check_in_before_confirming(node, tg):
    (reply,) = await say(tg, GROUP, ADMIN, "/pause nope")
    assert not reply.buttons and "no check-in 'nope'" in reply.text
    assert "canary, fresh, nightly" in reply.text
    (reply,) = await say(tg, GROUP, ADMIN, "/resume nightly")
    assert not reply.buttons and "check-in nightly is not paused" in reply.text
    (reply,) = await say(tg, GROUP, ADMIN, "/pause")
    assert not reply.buttons and "Usage: <code>/pause CHECK</code>" in reply.text
    assert "Paused" in await confirmed(tg, "/pause nightly")
    (reply,) = await say(tg, GROUP, ADMIN, "/pause nightly")
    assert not reply.buttons and "already paused (by @user100)" in reply.text


async def test_a_viewer_can_list_check_ins_but_not_pause_or_resume_them(node, tg):
    assert "for admins" in only(await say(tg, GROUP, VIEWER, "/pause nightly"))
    assert "for admins" in only(await say(tg, GROUP, VIEWER, "/resume nightly"))
    assert (await node.checkins.status("nightly")).state == "new"
    assert "🆕 <b>nightly</b> · new" in only(await say(tg, GROUP, VIEWER, "/checkins"))
