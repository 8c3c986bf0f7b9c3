"""The real bot over a PostgreSQL whose TCP link goes silent (issue 11): it answers
"database unavailable" within the database timeout instead of staying silent."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from bot.node import Node
from core.db import Database
from core.localtelegram import LocalTelegram, Sent
from tests.auxil.botnode import ADMIN, GROUP, start_test_node
from tests.auxil.tcpproxy import TcpProxy, through
from tests.bot.test_bot import say as say_in

WITHIN = 1.0 + 3  # the configured timeout plus a margin for a loaded 2-core machine


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    running = TcpProxy("127.0.0.1", 5432)
    await running.start()
    yield running
    running.resume()
    await running.stop()


@pytest.fixture
async def node(tmp_path, monkeypatch, tg, pg_url, proxy) -> AsyncIterator[Node]:
    direct = Database(pg_url)
    await direct.upgrade()
    await direct.close()
    database = {"url": through(pg_url, proxy), "timeout": "1s"}
    running = await start_test_node(tmp_path, monkeypatch, tg, database=database)
    yield running
    proxy.resume()
    await running.stop()


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
