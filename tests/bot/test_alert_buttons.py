"""Buttons on alerts through the real bot and the local Bot API: what a "down" message carries
per key, who may press, and what each press does (a real PM2 app for Restart and Logs, a real
command job for Run again)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.format import esc
from bot.node import Node
from bot.notify import flip_text
from core.localtelegram import LocalTelegram, Sent
from core.tables import utcnow
from tests.auxil.botnode import ADMIN, GROUP, OTHER_ADMIN, STRANGER, VIEWER, start_test_node
from tests.auxil.net import free_port
from tests.auxil.pm2apps import serves, start_app, stop_app
from tests.bot.test_bot import say
from tests.bot.test_restart import within
from tests.core.test_services import needs_pm2

# Alerts go to the first allowed chat, GROUP, where both admins and the viewer are.
MUTE, RESTART, LOGS, RUN = "🔕 Mute 1h", "🔄 Restart", "📜 Logs", "▶️ Run again"


def flaky_job(tmp_path: Path) -> dict[str, Any]:
    """A command job that fails until ``tmp_path / "fixed"`` exists."""
    check = f"import os, sys; sys.exit(0 if os.path.exists({str(tmp_path / 'fixed')!r}) else 'no')"
    return {
        "name": "flaky",
        "machine": "here",
        "every": "1h",
        "argv": [sys.executable, "-c", check],
    }


async def start_node(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tg: LocalTelegram,
    *,
    services: tuple[dict[str, Any], ...] = ({"name": "web"},),
) -> Node:
    return await start_test_node(
        tmp_path,
        monkeypatch,
        tg,
        telegram={"admins": [ADMIN, OTHER_ADMIN]},
        restart_settle="2s",
        services=[{"machine": "here", "manager": "pm2", **s} for s in services],
        jobs={"commands": [flaky_job(tmp_path)]},
    )


@pytest.fixture
async def node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tg: LocalTelegram
) -> AsyncIterator[Node]:
    running = await start_node(tmp_path, monkeypatch, tg)
    yield running
    await running.stop()


async def alert_of(tg: LocalTelegram, key: str) -> Sent:
    """The newest "down" message about ``key`` (the one with buttons)."""

    def found() -> Sent | None:
        down = [
            s
            for s in tg.sent
            if s.kind == "message" and f"<b>{esc(key)}</b>" in s.text and s.buttons
        ]
        return down[-1] if down else None

    return await within(10, found)  # type: ignore[no-any-return]


async def down(node: Node, tg: LocalTelegram, key: str, reason: str = "it broke") -> Sent:
    """Store a real "down" flip of ``key`` and wait for its alert."""
    flip = await node.alerts.observe(key, "critical", reason)
    assert flip is not None and flip.new_state == "down"
    node._wake_notifier()
    alert = await alert_of(tg, key)
    assert alert.text == flip_text(flip)
    return alert


async def audits(node: Node, command: str, count: int) -> list[str]:
    """The outcomes of the newest ``count`` audit rows of ``command``, oldest first, waiting
    for them (a press is audited after its answer, a command after its reply)."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        rows = [r for r in await node.audit.recent(limit=100) if r.command == command]
        if len(rows) >= count:
            return [r.outcome for r in reversed(rows[:count])]
        assert asyncio.get_running_loop().time() < deadline, f"fewer than {count} {command} rows"
        await asyncio.sleep(0.05)


def labels(message: Sent) -> list[str]:
    return [b["text"] for row in message.buttons for b in row]


def data(message: Sent, label: str) -> str:
    (found,) = [b["callback_data"] for row in message.buttons for b in row if b["text"] == label]
    return str(found)


async def press(
    tg: LocalTelegram, user: int, message: Sent | int, callback_data: str, chat: int = GROUP
) -> str:
    """Press a button as ``user``; the text the bot answered the query with."""
    after = tg.sent[-1].seq
    message_id = message if isinstance(message, int) else message.message_id or 0
    await tg.press(chat, user, message_id, callback_data, username=f"user{user}")

    def answered() -> str | None:
        return next((s.text for s in tg.sent if s.seq > after and s.kind == "answer"), None)

    return str(await within(5, answered))


def edits(tg: LocalTelegram, message: Sent) -> list[Sent]:
    return [s for s in tg.sent if s.kind == "edit" and s.message_id == message.message_id]


async def test_a_down_alert_carries_the_buttons_its_key_allows_and_a_recovery_none(node, tg):
    service = await down(node, tg, "service:here/web")
    assert labels(service) == [MUTE, RESTART, LOGS]
    flip_id = data(service, MUTE).split(":")[1]
    assert [data(service, b) for b in labels(service)] == [
        f"al:{flip_id}:mute",
        f"al:{flip_id}:restart",
        f"al:{flip_id}:logs",
    ]
    assert labels(await down(node, tg, "run:flaky")) == [MUTE, RUN]
    assert labels(await down(node, tg, "job:flaky")) == [MUTE, RUN]
    assert labels(await down(node, tg, "machine:here")) == [MUTE]
    # A service or job not in the config can only be muted.
    assert labels(await down(node, tg, "service:here/gone")) == [MUTE]
    assert labels(await down(node, tg, "job:external-cron")) == [MUTE]
    # The recovery says so, with nothing to press.
    after = tg.sent[-1].seq
    assert await node.alerts.observe("service:here/web", "ok", "back") is not None
    node._wake_notifier()
    (recovered,) = await tg.wait_sent(after, 5.0, chat_id=GROUP)
    assert "recovered" in recovered.text and recovered.buttons == []


async def test_a_viewer_press_is_refused_and_nothing_is_muted_or_asked(node, tg):
    alert = await down(node, tg, "service:here/web")
    assert await press(tg, VIEWER, alert, data(alert, MUTE)) == "Only admins can act on alerts."
    assert await press(tg, VIEWER, alert, data(alert, RESTART)) == (
        "Only admins can act on alerts."
    )
    assert await node.alerts.active_mutes() == []
    assert await audits(node, "alert", 2) == ["denied", "denied"]
    # Nothing but the answers: no edit of the alert, no confirmation asked.
    assert [s.kind for s in tg.sent if s.seq > alert.seq] == ["answer", "answer"]


async def test_a_stranger_press_is_ignored_by_the_allowlist(node, tg):
    alert = await down(node, tg, "machine:here")
    await tg.press(GROUP, STRANGER, alert.message_id or 0, data(alert, MUTE))
    assert await audits(node, "(button)", 1) == ["ignored"]
    assert [s for s in tg.sent if s.seq > alert.seq] == []
    assert await node.alerts.active_mutes() == []


async def test_mute_1h_mutes_the_key_and_each_admin_press_adds_its_line(node, tg):
    alert = await down(node, tg, "service:here/web", "crashed <twice> & more")
    assert await press(tg, ADMIN, alert, data(alert, MUTE)) == "Muted for 1h."
    (mute,) = await node.alerts.active_mutes()
    assert mute.key == "service:here/web" and mute.created_by == ADMIN
    assert utcnow() + timedelta(minutes=59) < mute.until <= utcnow() + timedelta(hours=1)
    assert await node.alerts.is_muted("service:here/web")
    assert not await node.alerts.is_muted("service:here/other")
    (edit,) = edits(tg, alert)
    assert edit.text == alert.text + "\n🔕 Muted for 1h by @user100"
    assert edit.buttons == alert.buttons  # Restart and Logs stay usable

    # Another admin presses on the edited alert: a second line under the first.
    assert await press(tg, OTHER_ADMIN, alert, data(alert, MUTE)) == "Muted for 1h."
    last = edits(tg, alert)[-1]
    assert last.text == alert.text + ("\n🔕 Muted for 1h by @user100\n🔕 Muted for 1h by @user101")
    assert last.buttons == alert.buttons
    assert await audits(node, "alert", 2) == ["ok", "ok"]


async def test_forged_and_misplaced_presses_are_answered_and_change_nothing(node, tg):
    alert = await down(node, tg, "machine:here")
    flip_id = data(alert, MUTE).split(":")[1]
    (status,) = await say(tg, GROUP, ADMIN, "/status")
    forged = [
        (alert, "al:999999:mute", "This alert is no longer known."),
        (alert, "al:x:y", "This button is not valid."),
        (alert, "al:", "This button is not valid."),
        (alert, f"al:{flip_id}:reboot", "This button is not valid."),
        (alert, f"al:{flip_id}:mute:extra", "This button is not valid."),
        (alert, "al:٣:mute", "This button is not valid."),  # digits to str, not to us
        # Real flip, but no such button on this message: a machine has no Restart,
        # and a /status reply is no alert.
        (alert, f"al:{flip_id}:restart", "This button is not on this message."),
        (status, f"al:{flip_id}:mute", "This button is not on this message."),
    ]
    for message, callback_data, answer in forged:
        assert await press(tg, ADMIN, message, callback_data) == answer, callback_data
    assert await node.alerts.active_mutes() == []
    assert edits(tg, alert) == [] and edits(tg, status) == []
    assert await audits(node, "alert", len(forged)) == ["error"] * len(forged)


async def test_a_button_works_after_a_restart_and_refuses_a_service_gone_from_the_config(
    tmp_path, monkeypatch, tg
):
    node = await start_node(tmp_path, monkeypatch, tg)
    try:
        alert = await down(node, tg, "service:here/web")
    finally:
        await node.stop()
    # The same database, a config without the service: its alert's flip is still known.
    node = await start_node(tmp_path, monkeypatch, tg, services=())
    try:
        answer = await press(tg, ADMIN, alert, data(alert, RESTART))
        assert answer == "service:here/web is no longer in the config."
        answer = await press(tg, ADMIN, alert, data(alert, LOGS))
        assert answer == "service:here/web is no longer in the config."
        assert [s.kind for s in tg.sent if s.seq > alert.seq] == ["answer", "answer"]
        assert await press(tg, ADMIN, alert, data(alert, MUTE)) == "Muted for 1h."
        (edit,) = edits(tg, alert)
        assert edit.text == alert.text + "\n🔕 Muted for 1h by @user100"
        assert labels(edit) == [MUTE]  # what no longer applies is gone from the alert
        (mute,) = await node.alerts.active_mutes()
        assert mute.key == "service:here/web"
    finally:
        await node.stop()


async def test_run_again_asks_the_presser_to_confirm_and_runs_the_job(tmp_path, node, tg):
    await node.jobs.run("flaky")  # fails: its run's key goes down
    alert = await alert_of(tg, "run:flaky")
    assert labels(alert) == [MUTE, RUN]
    (tmp_path / "fixed").write_text("")
    after = tg.sent[-1].seq
    assert await press(tg, ADMIN, alert, data(alert, RUN)) == "Confirm the run below."
    ask = await confirmation(tg, after)
    assert ask.text.startswith("Run <code>/run flaky</code>?")
    assert "Only user100 can confirm" in ask.text
    assert edits(tg, alert)[-1].text == alert.text + "\n▶️ Run asked by @user100"
    assert len(await node.runs.recent()) == 1  # only the failed run: nothing ran yet

    # The other admin cannot confirm it; the presser can.
    assert await press(tg, OTHER_ADMIN, ask, ask.buttons[0][0]["callback_data"]) == (
        "Only the admin who asked can confirm this."
    )
    await press(tg, ADMIN, ask, ask.buttons[0][0]["callback_data"])
    result = await finished(tg, ask)
    assert result.startswith("✅ <b>flaky</b> ok"), result
    assert await node.alerts.open_alerts() == []  # the good run recovered the key


async def confirmation(tg: LocalTelegram, after: int) -> Sent:
    def found() -> Sent | None:
        asks = [s for s in tg.sent if s.seq > after and s.kind == "message" and s.buttons]
        return asks[0] if asks else None

    ask: Sent = await within(5, found)
    assert ask.chat_id == GROUP and ask.buttons[0][0]["text"].endswith("Confirm")
    return ask


async def finished(tg: LocalTelegram, ask: Sent, seconds: float = 15) -> str:
    """The text a confirmation's message ends with once its command ran."""

    def done() -> str | None:
        texts = [e.text for e in edits(tg, ask) if not e.text.startswith("⏳")]
        return texts[-1] if texts else None

    return str(await within(seconds, done))


@needs_pm2
async def test_restart_asks_the_presser_to_confirm_then_restarts_the_pm2_app(
    tmp_path, monkeypatch, tg, pm2
):
    port = free_port()
    await start_app(tmp_path, "web", serves(port))
    await stop_app("web")
    health = {"type": "http", "url": f"http://127.0.0.1:{port}/", "expect_body": "ok"}
    node = await start_node(
        tmp_path, monkeypatch, tg, services=({"name": "web", "health": health},)
    )
    try:
        await say(tg, GROUP, VIEWER, "/health", wait=10.0)  # the sweep finds it down
        alert = await alert_of(tg, "service:here/web")
        assert labels(alert) == [MUTE, RESTART, LOGS]
        after = tg.sent[-1].seq
        assert await press(tg, ADMIN, alert, data(alert, RESTART)) == "Confirm the restart below."
        ask = await confirmation(tg, after)
        assert ask.text.startswith("Run <code>/restart web here</code>?")
        assert edits(tg, alert)[-1].text == alert.text + "\n🔄 Restart asked by @user100"
        answer = await press(tg, OTHER_ADMIN, ask, ask.buttons[0][0]["callback_data"])
        assert answer == "Only the admin who asked can confirm this."
        await press(tg, ADMIN, ask, ask.buttons[0][0]["callback_data"])
        result = await finished(tg, ask)
        assert result.startswith("🟢 web@here restarted, healthy"), result
        assert await node.alerts.open_alerts() == []
        assert await audits(node, "alert", 1) == ["ok"]  # the press
        # As a typed /restart records it ("confirming" is written after the question is out,
        # so the other admin's quick press may come first).
        assert sorted(await audits(node, "restart", 3)) == ["confirming", "denied", "ok"]
    finally:
        await node.stop()


@needs_pm2
async def test_logs_posts_the_service_logs_in_the_alert_chat(tmp_path, pm2, node, tg):
    await start_app(tmp_path, "web", "console.log('hello from web');\n" + serves(free_port()))
    alert = await down(node, tg, "service:here/web")
    after = tg.sent[-1].seq
    assert await press(tg, ADMIN, alert, data(alert, LOGS)) == "Logs coming below."

    def logs() -> Sent | None:
        found = [s for s in tg.sent if s.seq > after and s.text.startswith("📄 web@here")]
        return found[-1] if found else None

    reply: Sent = await within(10, logs)
    assert reply.chat_id == GROUP and "last 50 lines" in reply.text
    assert edits(tg, alert)[-1].text == alert.text + "\n📜 Logs shown to @user100"
    assert await audits(node, "logs", 1) == ["ok"]
    assert await node.alerts.active_mutes() == []


async def test_presses_of_two_admins_at_once_both_keep_their_line(node, tg):
    alert = await down(node, tg, "job:flaky")
    await asyncio.gather(
        tg.press(GROUP, ADMIN, alert.message_id or 0, data(alert, MUTE), username="user100"),
        tg.press(GROUP, OTHER_ADMIN, alert.message_id or 0, data(alert, MUTE), username="b"),
    )

    def both() -> Sent | None:
        done = [e for e in edits(tg, alert) if e.text.count("🔕") == 2]
        return done[-1] if done else None

    last: Sent = await within(5, both)
    assert "by @user100" in last.text and "by @b" in last.text
    assert edits(tg, alert)[-1] == last  # the newest edit has both lines
    assert len(await node.alerts.active_mutes()) == 2
