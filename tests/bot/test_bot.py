"""The real bot (PTB 22, the node's command layer) driven over HTTP through the local Bot API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.commands import Command, Context, Reply
from bot.node import Node
from core.errors import RemoteError
from core.localtelegram import LocalTelegram, Sent
from tests.auxil.botnode import (
    ADMIN,
    GROUP,
    OTHER_ADMIN,
    OTHER_GROUP,
    STRANGER,
    VIEWER,
    start_test_node,
)


async def long_reply(ctx: Context) -> Reply:
    return Reply("\n".join(f"line {i:04d} " + "x" * 40 for i in range(200)))


async def failing(ctx: Context) -> Reply:
    raise RemoteError("mini: SSH login refused")


async def buggy(ctx: Context) -> Reply:
    raise RuntimeError("secret internals")


async def buggy_check(ctx: Context) -> None:
    raise RuntimeError("secret internals")


EXTRA = [
    Command("long", "a 10,000-char reply", long_reply),
    Command(
        "buggycheck",
        "its check has a bug",
        long_reply,
        role="admin",
        mutates=True,
        check=buggy_check,
    ),
    Command("fails", "fails with a reason", failing),
    Command("buggy", "has a bug", buggy),
]


async def start_node(tmp_path: Path, monkeypatch, tg: LocalTelegram, **telegram) -> Node:
    telegram = {"admins": [ADMIN, OTHER_ADMIN], **telegram}
    return await start_test_node(tmp_path, monkeypatch, tg, telegram=telegram, commands=EXTRA)


@pytest.fixture
async def node(tmp_path, monkeypatch, tg) -> AsyncIterator[Node]:
    running = await start_node(tmp_path, monkeypatch, tg)
    yield running
    await running.stop()


def working(item: Sent) -> bool:
    """A progress message or edit ("⏳ …"), which the reply replaces."""
    return item.text.startswith("⏳")


async def say(tg: LocalTelegram, chat: int, user: int, text: str, wait: float = 5.0) -> list[Sent]:
    """Send ``text`` and return the bot's answer in ``chat``: past any progress message, the
    reply (which then is the edit of that message)."""
    last = tg.sent[-1].seq if tg.sent else 0
    await tg.inject_message(chat, user, text, username=f"user{user}")
    deadline = asyncio.get_running_loop().time() + wait
    answer: list[Sent] = []
    while not answer:
        left = deadline - asyncio.get_running_loop().time()
        items = await tg.wait_sent(last, max(left, 0.0), chat_id=chat)
        if not items:
            break
        last = items[-1].seq
        answer = [i for i in items if not working(i)]
    return answer


async def audit_outcomes(node: Node, count: int) -> list[tuple[str, str]]:
    """The newest ``count`` audit rows (command, outcome), waiting for them to be written."""
    for _ in range(100):
        rows = await node.audit.recent(limit=count)
        if len(rows) >= count:
            return [(r.command, r.outcome) for r in reversed(rows)]
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} audit rows")


async def audited(node: Node, *expected: tuple[str, str]) -> None:
    """Wait until the newest audit rows are ``expected``, in any order: a confirmation's
    "confirming" row is written after its question is out, so a quick press may be first."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        rows = [(r.command, r.outcome) for r in await node.audit.recent(limit=len(expected))]
        if sorted(rows) == sorted(expected):
            return
        assert asyncio.get_running_loop().time() < deadline, f"audit rows: {rows}"
        await asyncio.sleep(0.05)


async def test_an_admin_gets_the_status_screen(node, tg):
    (reply,) = await say(tg, GROUP, ADMIN, "/status")
    assert "<b>test</b> · primary" in reply.text and "No open alerts." in reply.text
    assert await audit_outcomes(node, 1) == [("status", "ok")]


async def test_commands_are_registered_per_scope(node, tg):
    default = [c["command"] for c in tg.commands['{"type": "default"}']]
    admin = [c["command"] for c in tg.commands[f'{{"chat_id": {ADMIN}, "type": "chat"}}']]
    assert "status" in default and "restart" not in default
    assert {"restart", "kill", "mute"} <= set(admin)


@pytest.mark.parametrize(
    ("chat", "user"),
    [(OTHER_GROUP, ADMIN), (STRANGER, STRANGER), (GROUP, STRANGER)],
    ids=["chat not allowed", "private chat of a stranger", "stranger in an allowed group"],
)
async def test_updates_outside_the_allowlist_get_no_reply_and_are_audited(node, tg, chat, user):
    assert await say(tg, chat, user, "/status", wait=1.0) == []
    assert await audit_outcomes(node, 1) == [("/status", "ignored")]


async def test_a_viewer_reads_but_cannot_mutate(node, tg):
    (status,) = await say(tg, GROUP, VIEWER, "/status")
    assert "primary" in status.text
    (denied,) = await say(tg, GROUP, VIEWER, "/mute 10m")
    assert "for admins" in denied.text and not denied.buttons
    assert await audit_outcomes(node, 2) == [("status", "ok"), ("mute", "denied")]
    assert await node.alerts.active_mutes() == []


async def confirmation(tg: LocalTelegram, user: int, text: str) -> Sent:
    (ask,) = await say(tg, GROUP, user, text)
    assert ask.buttons and ask.buttons[0][0]["text"].endswith("Confirm")
    return ask


async def press(tg: LocalTelegram, user: int, ask: Sent, which: int) -> list[Sent]:
    after = tg.sent[-1].seq
    await tg.press(GROUP, user, ask.message_id or 0, ask.buttons[0][which]["callback_data"])
    return await tg.wait_sent(after, 5.0)


async def test_a_mutating_command_runs_only_after_its_admin_confirms(node, tg):
    ask = await confirmation(tg, ADMIN, "/mute 30m")
    assert await node.alerts.active_mutes() == []
    items = await press(tg, ADMIN, ask, 0)
    await asyncio.sleep(0.2)
    edits = [s for s in tg.sent if s.kind == "edit" and s.message_id == ask.message_id]
    assert edits and "Muted all alerts for 30m" in edits[-1].text and not edits[-1].buttons
    assert items
    (mute,) = await node.alerts.active_mutes()
    assert mute.created_by == ADMIN
    await audited(node, ("mute", "confirming"), ("mute", "ok"))


async def test_another_admin_cannot_press_the_confirm_button(node, tg):
    ask = await confirmation(tg, ADMIN, "/mute 30m")
    items = await press(tg, OTHER_ADMIN, ask, 0)
    assert [i.text for i in items if i.kind == "answer"] == [
        "Only the admin who asked can confirm this."
    ]
    assert await node.alerts.active_mutes() == []
    await audited(node, ("mute", "confirming"), ("mute", "denied"))


async def test_cancel_runs_nothing(node, tg):
    ask = await confirmation(tg, ADMIN, "/mute 30m")
    await press(tg, ADMIN, ask, 1)
    await asyncio.sleep(0.2)
    assert any("Cancelled" in s.text for s in tg.sent if s.kind == "edit")
    assert await node.alerts.active_mutes() == []


async def test_an_expired_confirmation_runs_nothing(tmp_path, monkeypatch, tg):
    node = await start_node(tmp_path, monkeypatch, tg, confirm_timeout="1s")
    try:
        ask = await confirmation(tg, ADMIN, "/mute 30m")
        expired = await tg.wait_sent(ask.seq, 3.0)
        assert [s.text for s in expired if s.kind == "edit"] == ["⌛ Expired; nothing was run."]
        items = await press(tg, ADMIN, ask, 0)
        assert [i.text for i in items] == ["This confirmation is no longer valid."]
        assert await node.alerts.active_mutes() == []
        assert (await audit_outcomes(node, 2))[-1] == ("mute", "expired")
    finally:
        await node.stop()


async def test_html_in_arguments_is_escaped(node, tg):
    (refused,) = await say(tg, GROUP, ADMIN, "/mute 5m <script>&co")  # covers no key
    assert "'&lt;script&gt;&amp;co' covers no known alert key" in refused.text
    assert "<script>" not in refused.text and not refused.buttons
    ask = await confirmation(tg, ADMIN, "/mute 5m machine:[!<&>]*")  # a glob covering "here"
    assert "<code>/mute 5m machine:[!&lt;&amp;&gt;]*</code>" in ask.text
    await press(tg, ADMIN, ask, 0)
    await asyncio.sleep(0.2)
    assert any("machine:[!&lt;&amp;&gt;]*" in s.text for s in tg.sent if s.kind == "edit")
    (mute,) = await node.alerts.active_mutes()
    assert mute.key == "machine:[!<&>]*"


async def test_a_reply_of_10000_chars_is_split_on_line_boundaries(node, tg):
    replies = await say(tg, GROUP, VIEWER, "/long")
    await asyncio.sleep(0.3)
    replies = [s for s in tg.sent if s.chat_id == GROUP and "line" in s.text]
    assert len(replies) == 3 and all(len(r.text) <= 4096 for r in replies)
    lines = [line for r in replies for line in r.text.splitlines()]
    assert lines == [f"line {i:04d} " + "x" * 40 for i in range(200)]


async def test_a_failing_command_answers_its_reason_and_a_bug_no_traceback(node, tg):
    (failed,) = await say(tg, GROUP, VIEWER, "/fails")
    assert failed.text == "❌ mini: SSH login refused"
    (bug,) = await say(tg, GROUP, VIEWER, "/buggy")
    assert "internal error" in bug.text and "secret internals" not in bug.text
    assert "Traceback" not in bug.text
    assert await audit_outcomes(node, 2) == [("fails", "error"), ("buggy", "error")]


async def test_a_bug_in_an_argument_check_answers_without_a_traceback_or_confirmation(node, tg):
    (reply,) = await say(tg, GROUP, ADMIN, "/buggycheck now")
    assert reply.text == "❌ /buggycheck failed: internal error (RuntimeError)."
    assert not reply.buttons and "secret" not in reply.text
    assert await audit_outcomes(node, 1) == [("buggycheck", "error")]


async def test_an_unknown_command_gets_a_hint(node, tg):
    (hint,) = await say(tg, GROUP, VIEWER, "/reboot_everything")
    assert "Unknown command /reboot_everything" in hint.text and "/help" in hint.text


async def test_a_bad_argument_gets_the_usage_before_any_confirmation(node, tg):
    (refused,) = await say(tg, GROUP, ADMIN, "/mute soon")
    assert not refused.buttons
    assert "not a duration" in refused.text
    assert "Usage: <code>/mute DURATION [PATTERN]</code>" in refused.text
    assert await audit_outcomes(node, 1) == [("mute", "error")]
    assert await node.alerts.active_mutes() == []


async def test_telegram_answering_429_then_200_still_delivers_the_reply(node, tg):
    tg.fail("sendMessage", 429, retry_after=1)
    (reply,) = await say(tg, GROUP, VIEWER, "/status", wait=8.0)
    assert "primary" in reply.text
    assert tg.calls["sendMessage"] >= 2


async def test_a_critical_entry_alerts_once_and_recovery_is_announced(node, tg):
    await node.statuslog.start()
    for _ in range(3):
        await node._observe_entry(await node.statuslog.append("healer", "critical", "gateway <x>"))
    sent = await tg.wait_sent(0, 5.0, chat_id=GROUP)
    await asyncio.sleep(0.5)
    alerts = [s.text for s in tg.sent if s.chat_id == GROUP]
    assert alerts == ["🔴 <b>job:healer</b> is down\ngateway &lt;x&gt;"], sent
    await node._observe_entry(await node.statuslog.append("healer", "ok", "back"))
    await tg.wait_sent(tg.sent[-1].seq, 5.0, chat_id=GROUP)
    assert "recovered" in tg.sent[-1].text


async def test_alerts_survive_telegram_errors_and_are_sent_when_it_answers(node, tg):
    tg.fail("sendMessage", 502, count=2)
    await node._observe_entry(await node.statuslog.append("rnd", "critical", "late"))
    sent = await tg.wait_sent(0, 10.0, chat_id=GROUP)
    assert [s.text for s in sent] == ["🔴 <b>job:rnd</b> is down\nlate"]
    assert tg.calls["sendMessage"] == 3
    for _ in range(50):  # marked notified right after Telegram took it
        if not await node.alerts.pending():
            break
        await asyncio.sleep(0.05)
    assert await node.alerts.pending() == []


async def test_alerts_wait_while_telegram_is_off_and_go_out_when_it_is_back(node, tg):
    assert node.bot is not None
    await node.bot.stop_polling()
    await node._observe_entry(await node.statuslog.append("ios-dev", "critical", "down"))
    assert await tg.wait_sent(0, 1.5, chat_id=GROUP) == []
    assert len(await node.alerts.pending()) == 1
    await node.bot.start_polling()
    node.notifier.wake()  # type: ignore[union-attr]
    sent = await tg.wait_sent(0, 5.0, chat_id=GROUP)
    assert [s.text for s in sent] == ["🔴 <b>job:ios-dev</b> is down\ndown"]


async def test_a_second_poller_gets_409_conflict_and_it_is_counted(tg):
    import httpx

    async with httpx.AsyncClient(base_url=tg.base_url + "123:abc/") as client:
        first = asyncio.create_task(client.post("getUpdates", data={"timeout": "3"}))
        await asyncio.sleep(0.2)
        second = asyncio.create_task(client.post("getUpdates", data={"timeout": "0"}))
        old, new = await asyncio.gather(first, second)
    assert old.status_code == 409 and "terminated by other getUpdates" in old.json()["description"]
    assert new.status_code == 200 and tg.conflicts == 1
