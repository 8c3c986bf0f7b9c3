"""The real bot over a PostgreSQL whose TCP link goes silent (issue 11): it answers
"database unavailable" within the database timeout instead of staying silent."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.node import Node
from core.db import Database
from core.localtelegram import LocalTelegram, Sent
from tests.auxil.botnode import ADMIN, GROUP, start_test_node
from tests.auxil.tcpproxy import TcpProxy, through
from tests.bot.test_alert_buttons import MUTE, alert_of, data, edits, press
from tests.bot.test_bot import say as say_in
from tests.bot.test_restart import within

WITHIN = 1.0 + 3  # the configured timeout plus a margin for a loaded 2-core machine


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    running = TcpProxy("127.0.0.1", 5432)
    await running.start()
    yield running
    running.resume()
    await running.stop()


@pytest.fixture
async def start(tmp_path, monkeypatch, tg, pg_url, proxy) -> AsyncIterator[Any]:
    """Start a node on the session's PostgreSQL through ``proxy`` (1 s database timeout), with
    the given config sections; stopped at the end."""
    direct = Database(pg_url)
    await direct.upgrade()
    await direct.close()
    nodes: list[Node] = []

    async def started(**sections: Any) -> Node:
        database = {"url": through(pg_url, proxy), "timeout": "1s"}
        node = await start_test_node(tmp_path, monkeypatch, tg, database=database, **sections)
        nodes.append(node)
        return node

    yield started
    proxy.resume()
    for node in nodes:
        await node.stop()


@pytest.fixture
async def node(start) -> Node:
    return await start()


async def say(tg: LocalTelegram, text: str, wait: float) -> list[Sent]:
    return await say_in(tg, GROUP, ADMIN, text, wait)


async def test_the_bot_answers_database_unavailable_while_the_database_is_silent(node, tg, proxy):
    (before,) = await say(tg, "/status", 10)
    assert "primary" in before.text
    proxy.silence()
    started = time.monotonic()
    (reply,) = await say(tg, "/status", 10)
    assert reply.text == "⚠️ database unavailable: no answer within 1s"
    assert time.monotonic() - started < WITHIN
    proxy.resume()
    (after,) = await say(tg, "/status", 10)
    assert "primary" in after.text


async def test_an_alert_button_pressed_while_the_database_is_silent_does_nothing_and_says_so(
    node, tg, proxy
):
    key = f"job:silent-{uuid.uuid4().hex[:8]}"  # the session's database is shared
    await node.alerts.observe(key, "critical", "it broke")
    node._wake_notifier()
    alert = await alert_of(tg, key)
    proxy.silence()
    started = time.monotonic()
    answer = await press(tg, ADMIN, alert, data(alert, MUTE))
    assert answer == "The database did not answer; nothing was done. Try again."
    assert time.monotonic() - started < WITHIN
    assert edits(tg, alert) == []
    proxy.resume()
    assert not any(m.key == key for m in await node.alerts.active_mutes())
    assert await press(tg, ADMIN, alert, data(alert, MUTE)) == "Muted for 1h."


async def test_reminders_go_on_after_the_database_was_silent(start, tg, proxy, caplog):
    key = f"job:remind-{uuid.uuid4().hex[:8]}"
    node = await start(alerts={"rules": [{"match": key, "reminder_interval": "1s"}]})
    node.notifier.interval = 0.2
    await node.alerts.observe(key, "critical", "backup failed")
    node._wake_notifier()
    await alert_of(tg, key)
    proxy.silence()
    deadline = time.monotonic() + 10
    while not any("cannot read pending flips" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the notifier never met the silent database"
        await asyncio.sleep(0.05)
    proxy.resume()
    after = tg.sent[-1].seq
    reminder = f"🔁 <b>{key}</b> is still down"

    def reminded() -> Sent | None:
        return next((m for m in tg.sent if m.seq > after and m.text.startswith(reminder)), None)

    await within(15, reminded)  # the notifier backed off, and went on when it answered
    assert node.notifier._task is not None and not node.notifier._task.done()
