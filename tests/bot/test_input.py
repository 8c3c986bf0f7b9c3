"""What the bot does with what users type: edits, /start, /help, plain text, /failover without a
token. Through the real bot on the local Bot API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.commands import Command, Context, Reply
from bot.node import LOCAL_OPERATOR, Node
from core.config import LoadedConfig, parse_config
from tests.auxil.botnode import ADMIN, GROUP, STRANGER, VIEWER, start_test_node
from tests.auxil.net import free_port
from tests.bot.test_bot import audit_outcomes, say

RUNS: list[str] = []


async def count(ctx: Context) -> Reply:
    RUNS.append(ctx.inv.args_text)
    return Reply(f"run {len(RUNS)}")


@pytest.fixture
async def node(tmp_path, monkeypatch, tg) -> AsyncIterator[Node]:
    RUNS.clear()
    running = await start_test_node(
        tmp_path, monkeypatch, tg, commands=[Command("count", "counts its runs", count)]
    )
    yield running
    await running.stop()


async def test_an_edited_message_never_runs_a_command_again(node, tg):
    sent = await tg.inject_message(GROUP, ADMIN, "/count a", username="admin")
    assert [s.text for s in await tg.wait_sent(0, 5.0, chat_id=GROUP)] == ["run 1"]
    last = tg.sent[-1].seq
    await tg.inject_edit(GROUP, sent["message_id"], "/count b")
    await tg.inject_edit(GROUP, sent["message_id"], "/mute 10m")  # would ask a confirmation
    await tg.inject_edit(GROUP, sent["message_id"], "/no_such_command")  # would get a hint
    # A later new message is answered, and is the only thing answered after the edits.
    (after,) = await say(tg, GROUP, ADMIN, "/count c")
    assert after.text == "run 2" and RUNS == ["a", "c"]
    assert [s.text for s in tg.sent if s.seq > last] == ["run 2"]
    assert await audit_outcomes(node, 2) == [("count", "ok"), ("count", "ok")]


async def test_an_edit_in_a_private_chat_gets_no_plain_text_hint_either(node, tg):
    sent = await tg.inject_message(VIEWER, VIEWER, "/count", username="viewer")
    await tg.wait_sent(0, 5.0, chat_id=VIEWER)
    last = tg.sent[-1].seq
    await tg.inject_edit(VIEWER, sent["message_id"], "hello there")
    (reply,) = await say(tg, VIEWER, VIEWER, "/count")
    assert reply.text == "run 2"
    assert [s.text for s in tg.sent if s.seq > last] == ["run 2"]


async def test_start_says_what_the_bot_is_and_who_the_user_is_here(node, tg):
    (viewer,) = await say(tg, GROUP, VIEWER, "/start")
    assert "I am <b>clawops</b> on <b>test</b>" in viewer.text
    assert "You are a <b>viewer</b> here" in viewer.text and "for admins" in viewer.text
    assert "/status — " in viewer.text and "/help — " in viewer.text
    (helped,) = await say(tg, GROUP, VIEWER, "/help")
    assert viewer.text != helped.text and "/jobs" not in viewer.text
    (admin,) = await say(tg, ADMIN, ADMIN, "/start")
    assert "You are an <b>admin</b> here" in admin.text and "confirm" in admin.text


async def test_help_lists_only_what_the_user_may_run(node, tg):
    (viewer,) = await say(tg, GROUP, VIEWER, "/help")
    (admin,) = await say(tg, GROUP, ADMIN, "/help")
    admin_only = ("/restart", "/kill", "/mute", "/unmute", "/run")
    listed = {line.split()[0] for line in viewer.text.splitlines()[1:]}
    assert {"/status", "/health", "/jobs", "/help"} <= listed
    assert not listed & set(admin_only), listed & set(admin_only)
    assert all(f"\n{name}" in admin.text for name in admin_only)
    assert "confirmation" in admin.text and "confirmation" not in viewer.text


async def test_plain_text_gets_a_hint_in_a_private_chat_and_silence_in_a_group(node, tg):
    (hint,) = await say(tg, VIEWER, VIEWER, "what is going on?")
    assert "I answer commands" in hint.text and "/help" in hint.text
    assert await say(tg, GROUP, VIEWER, "lunch anyone?", wait=1.0) == []
    # A stranger's private chat stays silent too (the allowlist comes first).
    assert await say(tg, STRANGER, STRANGER, "hello?", wait=1.0) == []
    assert await audit_outcomes(node, 1) == [("hello?", "ignored")]


@pytest.fixture
async def local_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Node]:
    monkeypatch.delenv("NO_SUCH_BOT_TOKEN", raising=False)
    raw = {
        "node": {"name": "local", "data_dir": str(tmp_path / "data")},
        "telegram": {"token_env": "NO_SUCH_BOT_TOKEN", "local_api_port": free_port()},
        "sidecar": {"port": free_port()},
    }
    node = Node(LoadedConfig(parse_config(raw), None))
    await node.start()
    yield node
    await node.stop()


async def test_failover_without_a_token_explains_itself_instead_of_an_error(local_node):
    api = local_node.local_api
    assert api is not None and local_node.failover is None
    (reply,) = await say(api, LOCAL_OPERATOR, LOCAL_OPERATOR, "/failover", wait=10.0)
    assert "standby" in reply.text and "<b>off here</b>" in reply.text
    assert not reply.text.startswith(("⚠️", "❌")) and "Usage" not in reply.text
    assert await audit_outcomes(local_node, 1) == [("failover", "ok")]
    (takeover,) = await say(api, LOCAL_OPERATOR, LOCAL_OPERATOR, "/failover takeover")
    assert "failover is off on this node" in takeover.text and not takeover.buttons
