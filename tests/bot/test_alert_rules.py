"""[alerts] through the real node: thresholds per key pattern on entries POSTed to the sidecar,
reminders while a key stays down, maintenance windows, and the end of a silence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from bot.node import Node
from core.localtelegram import LocalTelegram
from core.tables import utcnow
from tests.auxil.botnode import start_test_node

ALERTS = -700  # the alert chat


@pytest.fixture
async def make_node(tmp_path, monkeypatch, tg) -> AsyncIterator[Any]:
    nodes: list[Node] = []

    async def make(**alerts: Any) -> Node:
        node = await start_test_node(
            tmp_path, monkeypatch, tg, alerts={"alert_chat": ALERTS, **alerts}
        )
        assert node.notifier is not None
        node.notifier.interval = 0.2  # follow-ups are looked for at each round
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.stop()


async def post(node: Node, job: str, status: str, message: str) -> None:
    """One entry, as a cron script sends it (loopback, no token)."""
    url = f"http://127.0.0.1:{node.config.sidecar.port}/api/log"
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.post(url, json={"jobId": job, "status": status, "message": message})
    assert response.status_code in (200, 201), response.text


def alerts(tg: LocalTelegram, after: int = 0) -> list[str]:
    return [s.text for s in tg.sent if s.chat_id == ALERTS and s.seq > after]


async def until_sent(tg: LocalTelegram, found: Any, seconds: float = 10.0) -> list[str]:
    """Wait until the alert chat's messages satisfy ``found``; return them."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not found(texts := alerts(tg)):
        assert asyncio.get_running_loop().time() < deadline, f"not in time; sent: {texts}"
        await tg.wait_sent(tg.sent[-1].seq if tg.sent else 0, 0.5, chat_id=ALERTS)
    return texts


async def test_a_rule_makes_its_keys_wait_for_consecutive_failures_and_successes(make_node, tg):
    node = await make_node(
        rules=[{"match": "job:flaky", "failure_threshold": 3, "success_threshold": 2}]
    )
    await post(node, "flaky", "critical", "timeout 1")
    await post(node, "flaky", "critical", "timeout 2")
    await post(node, "steady", "critical", "disk full")
    # The other key's alert is the sync point: flaky's two failures were fed before it.
    await until_sent(tg, lambda t: any("job:steady" in x for x in t))
    assert not any("job:flaky" in x for x in alerts(tg))
    await post(node, "flaky", "critical", "timeout 3")
    await until_sent(tg, lambda t: "🔴 <b>job:flaky</b> is down\ntimeout 3" in t)
    await post(node, "flaky", "ok", "fine")
    await post(node, "steady", "ok", "fine")
    await until_sent(tg, lambda t: any("job:steady</b> recovered" in x for x in t))
    assert not any("job:flaky</b> recovered" in x for x in alerts(tg)), "one ok is not enough"
    await post(node, "flaky", "ok", "fine again")
    texts = await until_sent(tg, lambda t: any("job:flaky</b> recovered" in x for x in t))
    assert [x for x in texts if "job:flaky" in x] == [
        "🔴 <b>job:flaky</b> is down\ntimeout 3",
        "✅ <b>job:flaky</b> recovered\nfine again",
    ]


async def test_a_key_that_stays_down_is_reminded_until_it_recovers(make_node, tg):
    node = await make_node(rules=[{"match": "job:nightly", "reminder_interval": "1s"}])
    await post(node, "nightly", "critical", "backup failed <rc=2>")
    texts = await until_sent(tg, lambda t: sum(x.startswith("🔁") for x in t) >= 2)
    assert texts[0] == "🔴 <b>job:nightly</b> is down\nbackup failed &lt;rc=2&gt;"
    reminders = [x for x in texts if x.startswith("🔁")]
    assert reminders[0].startswith("🔁 <b>job:nightly</b> is still down\ndown for 1s: ")
    assert reminders[0].endswith("backup failed &lt;rc=2&gt;")
    await post(node, "nightly", "ok", "backup done")
    texts = await until_sent(tg, lambda t: any("recovered" in x for x in t))
    assert texts[-1] == "✅ <b>job:nightly</b> recovered\nbackup done"
    state = await node.alerts.state("job:nightly")
    assert state is not None and state.state == "up"


async def test_a_maintenance_window_holds_back_its_keys_alerts_only(make_node, tg):
    node = await make_node(
        maintenance=[
            {"name": "backups", "match": "job:backup-*", "cron": "* * * * *", "duration": "1h"}
        ]
    )
    await post(node, "backup-db", "critical", "dump failed")
    await post(node, "crm", "critical", "crm down")
    await until_sent(tg, lambda t: any("job:crm" in x for x in t))
    assert not any("backup-db" in x for x in alerts(tg))
    (held,) = [f for f in await node.alerts.open_alerts() if f.key == "job:backup-db"]
    assert await node.alerts.silenced_by("job:backup-db") is not None
    assert held.state == "down"


@pytest.mark.parametrize("silence", ["mute", "maintenance window"])
async def test_a_key_still_down_when_its_silence_ends_is_announced_once_then(
    make_node, tg, silence
):
    if silence == "mute":
        node = await make_node()
        await node.alerts.mute(utcnow() + timedelta(seconds=3), key="job:deploy*")
        held = "held back while muted until"
    else:  # a window that opened at the start of this minute and ends seconds from now
        now = utcnow()
        start = now.replace(second=0, microsecond=0)
        length = int((now - start).total_seconds()) + 8
        cron = f"{start.minute} {start.hour} * * *"
        window = {"name": "deploy", "match": "job:deploy", "cron": cron, "duration": f"{length}s"}
        node = await make_node(maintenance=[window])
        held = "held back while maintenance window deploy until"
    await post(node, "deploy", "critical", "migration failed")
    await post(node, "crm", "critical", "crm down")
    await until_sent(tg, lambda t: any("job:crm" in x for x in t))
    assert not any("job:deploy" in x for x in alerts(tg)), f"held back by the {silence}"
    texts = await until_sent(tg, lambda t: any("job:deploy" in x for x in t), 20)
    (told,) = [x for x in texts if "job:deploy" in x]
    assert told.startswith("🔴 <b>job:deploy</b> is down (its silence is over)\ndown for ")
    assert held in told and told.endswith("migration failed")
    # Once: the next rounds of the notifier store nothing more about it.
    await post(node, "deploy", "ok", "migrated")
    texts = await until_sent(tg, lambda t: any("job:deploy</b> recovered" in x for x in t))
    assert [x for x in texts if "job:deploy" in x] == [
        told,
        "✅ <b>job:deploy</b> recovered\nmigrated",
    ]
