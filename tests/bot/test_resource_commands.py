"""/locks, /release, /accounts, /emergency and the emergency line of /status, through the bot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from bot.node import Node
from core.tables import utcnow
from tests.auxil.botnode import start_test_node
from tests.bot.test_bot import ADMIN, GROUP, VIEWER, say
from tests.bot.test_fleet_commands import confirmed, only


@pytest.fixture
async def node(tmp_path, monkeypatch, tg) -> AsyncIterator[Node]:
    running = await start_test_node(
        tmp_path, monkeypatch, tg, machines=[],
        # Announcements (emergency on/off) go to their own chat: replies in GROUP are replies.
        telegram={"alert_chat": -700},
        resources=[{"name": "ollama", "max_concurrent": 1, "lease_ttl": "30s"}],
        llm_accounts=[{"name": "claude-main"}, {"name": "claude-backup"}],
    )  # fmt: skip
    yield running
    await running.stop()


async def test_locks_shows_holders_and_waiters_and_release_frees_a_slot(node, tg):
    held = await node.leases.enqueue("ollama", "ios-dev")
    assert (await node.leases.try_acquire(held.lease)).held
    waiting = await node.leases.enqueue("ollama", "rnd")
    await node.leases.try_acquire(waiting.lease)
    text = only(await say(tg, GROUP, VIEWER, "/locks"))
    assert "<b>ollama</b> · 1/1 held · 1 waiting" in text
    assert "🔒 ios-dev" in text and held.lease in text and "⏳ 1. rnd" in text
    refused = only(await say(tg, GROUP, ADMIN, "/release nosuchlease"))
    assert "nosuchlease" in refused and "gone" in refused  # refused before any confirmation
    result = await confirmed(tg, f"/release {held.lease}")
    assert "released ollama from ios-dev" in result
    assert (await node.leases.try_acquire(waiting.lease)).held


async def test_accounts_and_emergency_by_hand_show_in_status(node, tg):
    await node.emergency.limited("claude-main", utcnow() + timedelta(minutes=45))
    text = only(await say(tg, GROUP, VIEWER, "/accounts"))
    assert "⏳ claude-main: limited until" in text and "🟢 claude-backup: available" in text
    assert "Emergency" not in only(await say(tg, GROUP, VIEWER, "/status", wait=10.0))
    assert "on or /emergency off" in only(await say(tg, GROUP, ADMIN, "/emergency maybe"))
    assert "now on" in await confirmed(tg, "/emergency on")
    assert "🚨 <b>Emergency mode</b>" in only(await say(tg, GROUP, VIEWER, "/status", wait=10.0))
    assert "🚨 Emergency mode" in only(await say(tg, GROUP, VIEWER, "/accounts"))
    assert "now off" in await confirmed(tg, "/emergency off")
    assert (await node.emergency.accounts.emergency()).on is False
