"""/jobs and /run through the real bot, with scheduled commands that really run."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import pytest

from bot.node import Node
from tests.auxil.botnode import start_test_node
from tests.bot.test_bot import ADMIN, GROUP, VIEWER, audit_outcomes, say
from tests.bot.test_fleet_commands import confirmed, only

COMMANDS = [
    {"name": "git-sync", "machine": "here", "every": "15m",
     "argv": [sys.executable, "-c", "print('pulled 2 repos')"]},
    {"name": "crash-monitor", "machine": "here", "cron": "0 * * * *",
     "argv": [sys.executable, "-c", "import sys; sys.exit('gateway crashed twice')"]},
]  # fmt: skip


@pytest.fixture
async def node(tmp_path, monkeypatch, tg) -> AsyncIterator[Node]:
    # A failed run alerts: alerts go to their own chat, so replies in GROUP are only replies.
    running = await start_test_node(
        tmp_path, monkeypatch, tg, telegram={"alert_chat": -700}, jobs={"commands": COMMANDS}
    )
    yield running
    await running.stop()


async def test_jobs_lists_every_job_with_its_schedule_and_next_run(node, tg):
    text = only(await say(tg, GROUP, VIEWER, "/jobs"))
    assert "<b>git-sync</b> · every 15m · next in 1" in text
    assert "<b>crash-monitor</b> · cron 0 * * * * · next in" in text
    assert "<b>retention</b>" in text and "never ran" in text


async def test_run_asks_confirmation_runs_the_job_and_jobs_shows_the_outcome(node, tg):
    result = await confirmed(tg, "/run git-sync")
    assert "✅ <b>git-sync</b> ok" in result and "pulled 2 repos" in result
    failed = await confirmed(tg, "/run crash-monitor")
    assert "❌ <b>crash-monitor</b> failed" in failed and "gateway crashed twice" in failed
    text = only(await say(tg, GROUP, VIEWER, "/jobs"))
    assert "✅ 0s ago: ok on here" in text and "❌ 0s ago: exit 1 on here" in text
    status = only(await say(tg, GROUP, VIEWER, "/status", wait=10.0))
    assert "Jobs: 1/2 ok at their last run: ❌ crash-monitor" in status
    assert "run:crash-monitor" in status  # the failed run is an open alert
    outcomes = await audit_outcomes(node, 6)
    assert ("run", "ok") in outcomes


async def test_run_of_an_unknown_job_is_refused_without_confirmation(node, tg):
    (reply,) = await say(tg, GROUP, ADMIN, "/run rm-rf")
    assert not reply.buttons and "no job 'rm-rf'" in reply.text and "git-sync" in reply.text
    assert await node.runs.recent() == []


async def test_a_viewer_cannot_run_a_job(node, tg):
    reply = only(await say(tg, GROUP, VIEWER, "/run git-sync"))
    assert "for admins" in reply
    assert await node.runs.recent() == []


async def test_a_long_run_shows_it_started_then_its_outcome_on_the_confirmation(
    tmp_path, monkeypatch, tg
):
    go = tmp_path / "go"
    wait = (
        "import os, sys, time\n"
        "for _ in range(400):\n"
        "    if os.path.exists(sys.argv[1]):\n"
        "        break\n"
        "    time.sleep(0.05)\n"
        "print('waited')"
    )
    argv = [sys.executable, "-c", wait, str(go)]
    job = {"name": "wait", "machine": "here", "every": "1h", "argv": argv}
    node = await start_test_node(
        tmp_path, monkeypatch, tg, telegram={"progress_after": "100ms"}, jobs={"commands": [job]}
    )
    try:
        (ask,) = await say(tg, ADMIN, ADMIN, "/run wait")
        await tg.press(ADMIN, ADMIN, ask.message_id or 0, ask.buttons[0][0]["callback_data"])

        def edits() -> list[str]:
            return [s.text for s in tg.sent if s.kind == "edit" and s.message_id == ask.message_id]

        while len(edits()) < 2:  # "Running", then (after the edit interval) "started"
            assert await tg.wait_sent(tg.sent[-1].seq, 5.0, actions=True), edits()
        running, started = edits()
        assert running == "⏳ Running <code>/run wait</code>…"
        assert started.startswith("⏳ <b>wait</b> started at ") and started.endswith(" UTC")
        assert any(s.kind == "action" and s.chat_id == ADMIN for s in tg.sent)
        go.touch()
        while len(edits()) < 3:
            assert await tg.wait_sent(tg.sent[-1].seq, 10.0), edits()
        assert edits()[2].startswith("✅ <b>wait</b> ok in ") and "waited" in edits()[2]
        assert [s.kind for s in tg.sent if s.kind in ("message", "document")] == ["message"]
    finally:
        await node.stop()
