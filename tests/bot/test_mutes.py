"""/mute, /mutes, /unmute and /status through the real bot: a mute covers known keys, or no."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.node import Node
from core.localtelegram import LocalTelegram
from core.tables import utcnow
from tests.auxil.botnode import ADMIN, GROUP, HERE, OTHER_GROUP, VIEWER, start_test_node
from tests.bot.test_bot import audit_outcomes, confirmation, press, say

ALERTS = OTHER_GROUP
SERVICES = [
    {"name": "ollama", "machine": "here", "manager": "process"},
    {"name": "gateway", "machine": "here", "manager": "process"},
]
WINDOWS = [
    # Open whenever a test runs: it starts every minute and lasts two.
    {"name": "lume update", "match": "machine:here", "cron": "* * * * *", "duration": "2m"},
    # Open one minute a year.
    {"name": "new year", "match": "job:*", "cron": "0 0 1 1 *", "duration": "1m"},
]


async def start(tmp_path: Path, monkeypatch, tg: LocalTelegram, **alerts) -> Node:
    """The services are not running: the alerts /status's sweep raises go to ALERTS, not to the
    chat the commands are answered in."""
    return await start_test_node(
        tmp_path,
        monkeypatch,
        tg,
        machines=[HERE],
        services=SERVICES,
        alerts={"alert_chat": ALERTS, **alerts},
    )


@pytest.fixture
async def node(tmp_path, monkeypatch, tg) -> AsyncIterator[Node]:
    running = await start(tmp_path, monkeypatch, tg, maintenance=WINDOWS)
    yield running
    await running.stop()


@pytest.fixture
async def quiet(tmp_path, monkeypatch, tg) -> AsyncIterator[Node]:
    """A node without maintenance windows."""
    running = await start(tmp_path, monkeypatch, tg)
    yield running
    await running.stop()


async def mute(tg: LocalTelegram, text: str) -> tuple[str, str]:
    """Ask and confirm ``text`` as the admin: the question and the reply."""
    ask = await confirmation(tg, ADMIN, text)
    await press(tg, ADMIN, ask, 0)
    for _ in range(100):
        edits = [s for s in tg.sent if s.kind == "edit" and s.message_id == ask.message_id]
        if edits and not edits[-1].text.startswith("⏳"):
            return ask.text, edits[-1].text
        await asyncio.sleep(0.05)
    raise AssertionError(f"no reply to {text}")


async def test_a_typo_is_refused_with_the_keys_close_to_it_and_nothing_is_stored(node, tg):
    (refused,) = await say(tg, GROUP, ADMIN, "/mute 1h olama")
    assert not refused.buttons
    assert "'olama' covers no known alert key" in refused.text
    assert "Did you mean service:here/ollama" in refused.text
    assert "machine:…" in refused.text and "/mutes" in refused.text
    assert "Usage: <code>/mute DURATION [PATTERN]</code>" in refused.text
    (glob,) = await say(tg, GROUP, ADMIN, "/mute 1h service:there/*")
    assert "covers no known alert key" in glob.text and not glob.buttons
    assert await node.alerts.active_mutes() == []
    assert await audit_outcomes(node, 2) == [("mute", "error"), ("mute", "error")]


async def test_a_glob_says_how_many_keys_it_covers_and_names_them(node, tg):
    question, reply = await mute(tg, "/mute 1h service:here/*")
    assert "Covers 2 keys: service:here/gateway, service:here/ollama." in question
    assert "🔕 Muted alerts for <b>service:here/*</b> for 1h (until " in reply
    assert reply.endswith("UTC): 2 keys (service:here/gateway, service:here/ollama).")
    (stored,) = await node.alerts.active_mutes()
    assert stored.key == "service:here/*" and stored.created_by == ADMIN


async def test_a_bare_machine_name_covers_the_machine_and_its_services(node, tg):
    question, reply = await mute(tg, "/mute 30m here")
    assert "Covers 3 keys: machine:here, service:here/gateway, service:here/ollama." in question
    assert "3 keys" in reply


async def test_a_mute_of_everything_says_so(node, tg):
    question, reply = await mute(tg, "/mute 2h")
    assert "Mutes <b>every</b> alert (" in question and "and any new one" in question
    assert reply.startswith("🔕 Muted all alerts for 2h (until ")
    (stored,) = await node.alerts.active_mutes()
    assert stored.key is None


async def test_a_star_covers_every_known_key_and_a_long_list_is_cut(node, tg):
    question, _ = await mute(tg, "/mute 1h *")
    count = int(question.split("Covers ")[1].split(" keys")[0])
    assert count >= 8  # machine, 2 services, job:/run: of each built-in job, split-brain
    covers = question.splitlines()[1]
    assert covers.count(", ") == 4 and covers.endswith(f"and {count - 5} more.")
    (stored,) = await node.alerts.active_mutes()
    assert stored.key == "*"


async def test_a_very_long_pattern_is_refused_before_any_confirmation(node, tg):
    (refused,) = await say(tg, GROUP, ADMIN, "/mute 1h " + "service:here/" + "x" * 300)
    assert "a pattern is at most 200 characters (got 313)" in refused.text
    assert not refused.buttons and "xxxxxxxxxx" not in refused.text.split("Usage")[0]
    (html,) = await say(tg, GROUP, ADMIN, "/mute 1h <b>here</b>")
    assert "'&lt;b&gt;here&lt;/b&gt;' covers no" in html.text and "<b>here" not in html.text
    assert await node.alerts.active_mutes() == []


async def test_a_mute_silences_the_keys_it_covers_and_not_the_others(quiet, tg):
    # Status-log keys of built-in jobs: known, and observed by nothing else during the test.
    await mute(tg, "/mute 1h job:healer")
    muted = await quiet.alerts.observe("job:healer", "critical", "crashed")
    loud = await quiet.alerts.observe("job:cleaner", "critical", "crashed <too>")
    assert muted is not None and muted.suppressed and muted.silenced_by.startswith("muted until")
    assert loud is not None and not loud.suppressed
    assert "job:healer" not in [f.key for f in await quiet.alerts.pending()]
    assert quiet.notifier is not None
    quiet.notifier.wake()
    sent = await tg.wait_sent(0, 5.0, chat_id=ALERTS)
    assert any("job:cleaner" in s.text and "crashed &lt;too&gt;" in s.text for s in sent)
    await asyncio.sleep(0.2)
    assert not any("job:healer" in s.text for s in tg.sent if s.chat_id == ALERTS)


async def test_a_maintenance_window_silences_the_keys_it_covers(node, tg):
    flip = await node.alerts.observe("machine:here", "critical", "unreachable")
    assert flip is not None and flip.suppressed
    assert flip.silenced_by.startswith("maintenance window lume update until")
    other = await node.alerts.observe("service:here/gateway", "critical", "down")
    assert other is not None and not other.suppressed


async def test_mutes_lists_the_mutes_and_the_windows(node, tg):
    until = utcnow() + timedelta(hours=2)
    await node.alerts.mute(until, key="service:here/*", by=ADMIN)
    await node.alerts.mute(utcnow() + timedelta(days=3), by=ADMIN)
    (reply,) = await say(tg, GROUP, VIEWER, "/mutes")
    lines = reply.text.splitlines()
    assert lines[0] == "<b>Mutes (2)</b>"
    assert lines[1].startswith(f"🔕 <code>service:here/*</code> until {until:%H:%M} UTC (1h5")
    assert lines[1].endswith(f"left) · by {ADMIN} · 2 keys")
    assert lines[2].startswith("🔕 <b>everything</b> until ") and " (2d23h5" in lines[2]
    assert lines[3] == "<b>Maintenance windows</b>"
    assert lines[4].startswith("🛠 lume update: open until ") and lines[4].endswith("· 1 key")
    assert lines[5].startswith("🗓 new year: next ") and "00:00 UTC, for 1m · " in lines[5]
    assert lines[5].endswith(" keys")  # job:* covers the jobs' status-log keys
    assert "Nothing is muted." not in reply.text


async def test_status_shows_the_mutes_and_the_open_windows(node, tg):
    until = utcnow() + timedelta(hours=1)
    await node.alerts.mute(until, key="service:here/*", by=ADMIN)
    await node.alerts.observe("service:here/web", "critical", "refused")
    await node.alerts.observe("machine:elsewhere", "critical", "unreachable")
    (reply,) = await say(tg, GROUP, VIEWER, "/status")
    line = next(x for x in reply.text.splitlines() if x.startswith("🔕"))
    assert line.startswith(f"🔕 Muted: service:here/* until {until:%H:%M} UTC · 🛠 Maintenance: ")
    assert "lume update until " in line and "new year" not in line
    # An open alert says what holds it back; one nothing silences says nothing more.
    assert f"🔴 service:here/web: refused · 🔕 muted until {until:%Y-%m-%d %H:%M} UTC" in reply.text
    assert "🔴 machine:elsewhere: unreachable\n" in reply.text


async def test_nothing_is_muted_then_unmute_ends_a_pattern(quiet, tg):
    (empty,) = await say(tg, GROUP, VIEWER, "/mutes")
    assert empty.text == "Nothing is muted."
    (status,) = await say(tg, GROUP, VIEWER, "/status")
    assert "🔕" not in status.text and "🛠" not in status.text
    await mute(tg, "/mute 1h gateway")
    await mute(tg, "/mute 1h ollama")
    (ended,) = await say(tg, GROUP, ADMIN, "/unmute gateway")
    assert ended.text == "🔔 Unmuted (1 mute ended)."
    (left,) = await say(tg, GROUP, VIEWER, "/mutes")
    assert "<code>ollama</code>" in left.text and "gateway" not in left.text
    (none,) = await say(tg, GROUP, ADMIN, "/unmute gateway")
    assert none.text == "Nothing was muted."


async def test_a_viewer_cannot_mute_but_reads_the_mutes(node, tg):
    (denied,) = await say(tg, GROUP, VIEWER, "/mute 1h here")
    assert "for admins" in denied.text and not denied.buttons
    (listed,) = await say(tg, GROUP, VIEWER, "/mutes")
    assert "lume update" in listed.text
    assert await node.alerts.active_mutes() == []
    assert await audit_outcomes(node, 2) == [("mute", "denied"), ("mutes", "ok")]
