"""Commands about a machine this node has no SSH to, through the real bot on the local Bot API:
what needs a command there answers why it cannot, at once, before any confirmation, and is
audited as an error; what can be watched (its HTTP checks) is."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.node import Node
from core.localtelegram import LocalTelegram
from tests.auxil.botnode import HERE, start_test_node
from tests.auxil.net import serve
from tests.bot.test_bot import ADMIN, GROUP, VIEWER, audited, say

NOSSH = (
    "macbook has no SSH from this node ([machines.ssh] is not set): clawops watches it by its "
    "HTTP/TCP checks and the peer API, and cannot run commands there"
)


@pytest.fixture
async def node(tmp_path, monkeypatch, tg: LocalTelegram) -> AsyncIterator[Node]:
    async def root(request: web.Request) -> web.Response:
        return web.Response(text="gateway")

    app = web.Application()
    app.router.add_get("/", root)
    gateway, url = await serve(app)
    macbook = {"name": "macbook", "os": "macos", "address": "127.0.0.1"}
    services = [
        {
            "name": "gateway",
            "machine": "macbook",
            "manager": "launchd",
            "port": 18789,
            "health": {"type": "http", "url": f"{url}/"},
        },
        {"name": "crabwalk", "machine": "macbook", "manager": "launchd"},
    ]
    running = await start_test_node(
        tmp_path, monkeypatch, tg, machines=[HERE, macbook], services=services
    )
    yield running
    await running.stop()
    await gateway.cleanup()


def only(answer: list) -> str:
    assert len(answer) == 1, [a.text for a in answer]
    assert not answer[0].buttons, "refused before any confirmation"
    return str(answer[0].text)


@pytest.mark.parametrize(
    "text", ["/restart gateway", "/restart crabwalk macbook", "/kill 18789 macbook"]
)
async def test_a_mutating_command_there_is_refused_with_the_reason_and_asks_nothing(node, tg, text):
    started = time.monotonic()
    reply = only(await say(tg, GROUP, ADMIN, text))
    assert reply == f"❌ {NOSSH}"
    assert time.monotonic() - started < 5  # answered at once, not after an SSH timeout
    await audited(node, (text.split()[0][1:], "error"))
    assert await node.alerts.open_alerts() == []  # and nothing recorded as down


async def test_logs_there_answer_the_reason_and_are_audited_as_an_error(node, tg):
    reply = only(await say(tg, GROUP, VIEWER, "/logs gateway"))
    assert reply == f"❌ {NOSSH}"
    await audited(node, ("logs", "error"))


async def test_health_services_and_ports_show_what_is_watched_and_what_is_not(node, tg):
    health = only(await say(tg, GROUP, VIEWER, "/health", wait=10.0))
    assert "🟢 <b>macbook</b> no SSH; 1/1 HTTP/TCP check(s) answered" in health
    assert "✅ gateway@macbook: HTTP 200" in health
    assert "manager state not read (no SSH)" in health
    assert "⏸ crabwalk@macbook: no SSH to macbook and it has no check: not watched" in health
    services = only(await say(tg, GROUP, VIEWER, "/services macbook"))
    assert "gateway, crabwalk: no SSH from this node, their states are unknown" in services
    ports = only(await say(tg, GROUP, VIEWER, "/ports macbook"))
    assert "<b>macbook</b>: no SSH from this node, ports not listed" in ports
    status = only(await say(tg, GROUP, VIEWER, "/status", wait=10.0))
    assert "🟢 macbook" in status and "1 service(s) without SSH or an HTTP/TCP check" in status
    # Nothing is down for want of SSH.
    assert await node.alerts.open_alerts() == []
