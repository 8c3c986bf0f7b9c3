"""/restart through the real bot on real PM2 apps: it answers healthy only for a service that
stays up and passes its check, and an unhealthy restart raises the service's alert."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.node import Node
from core.localtelegram import LocalTelegram
from tests.auxil.botnode import start_test_node
from tests.auxil.net import free_port
from tests.auxil.pm2apps import CRASHES_AFTER_A_SECOND, serves, start_app, stop_app
from tests.bot.test_bot import ADMIN, GROUP, VIEWER, press, say
from tests.core.test_services import needs_pm2

ALERTS = -700  # the alert chat: what arrives there is an alert, not a reply


async def start_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tg: LocalTelegram, *services: dict[str, Any]
) -> Node:
    pm2 = [{"machine": "here", "manager": "pm2", **s} for s in services]
    telegram = {"alert_chat": ALERTS}
    return await start_test_node(
        tmp_path, monkeypatch, tg, telegram=telegram, restart_settle="2s", services=pm2
    )


async def within(seconds: float, found: Any) -> Any:
    """Wait until ``found()`` returns something, for at most ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (result := found()) is None:
        assert asyncio.get_running_loop().time() < deadline, "nothing arrived in time"
        await asyncio.sleep(0.05)
    return result


async def restart(tg: LocalTelegram, name: str) -> str:
    """``/restart name``, confirmed by the admin; the answer it ends with (the progress shown
    on the way, if any, is skipped)."""
    (ask,) = await say(tg, GROUP, ADMIN, f"/restart {name}")
    assert ask.buttons, ask.text
    await press(tg, ADMIN, ask, 0)

    def answer() -> str | None:
        mine = [s.text for s in tg.sent if s.chat_id == GROUP and s.seq > ask.seq]
        done = [text for text in mine if " restarted" in text]
        return done[-1] if done else None

    return str(await within(15, answer))


async def alert(tg: LocalTelegram, first_line: str) -> str:
    def sent() -> str | None:
        found = [s.text for s in tg.sent if s.chat_id == ALERTS and s.text.startswith(first_line)]
        return found[-1] if found else None

    return str(await within(10, sent))


@needs_pm2
async def test_restart_of_a_service_that_crashes_a_second_after_start_answers_unhealthy_and_alerts(
    tmp_path, monkeypatch, tg, pm2
):
    await start_app(tmp_path, "crasher", CRASHES_AFTER_A_SECOND)
    node = await start_node(tmp_path, monkeypatch, tg, {"name": "crasher"})
    try:
        answer = await restart(tg, "crasher")
        first = answer.split("\n")[0]
        assert first.startswith("⚠️ crasher@here restarted but unhealthy: crashed "), answer
        assert first.endswith("within 2 s")
        text = await alert(tg, "🔴 <b>service:here/crasher</b> is down")
        assert "restarted but unhealthy: crashed " in text
        (down,) = await node.alerts.open_alerts()
        assert down.key == "service:here/crasher"
    finally:
        await node.stop()


@needs_pm2
async def test_restart_of_a_service_whose_health_check_fails_answers_unhealthy_with_its_reason(
    tmp_path, monkeypatch, tg, pm2
):
    nobody = free_port()
    await start_app(tmp_path, "deaf", serves(free_port()))
    deaf = {"name": "deaf", "health": {"type": "tcp", "port": nobody}}
    node = await start_node(tmp_path, monkeypatch, tg, deaf)
    try:
        answer = await restart(tg, "deaf")
        reason = f"restarted but unhealthy: health check failed: 127.0.0.1:{nobody}: "
        assert answer.startswith(f"⚠️ deaf@here {reason}"), answer
        assert "🟢 deaf · pm2 pid " in answer  # the manager says running: the check is why
        assert reason in await alert(tg, "🔴 <b>service:here/deaf</b> is down")
    finally:
        await node.stop()


@needs_pm2
async def test_restart_of_a_healthy_service_answers_healthy_and_recovers_its_alert(
    tmp_path, monkeypatch, tg, pm2
):
    port = free_port()
    await start_app(tmp_path, "web", serves(port))
    await stop_app("web")
    health = {"type": "http", "url": f"http://127.0.0.1:{port}/", "expect_body": "ok"}
    web = {"name": "web", "port": port, "health": health}
    node = await start_node(tmp_path, monkeypatch, tg, web)
    try:
        await say(tg, GROUP, VIEWER, "/health", wait=10.0)  # the sweep finds it down
        await alert(tg, "🔴 <b>service:here/web</b> is down")
        answer = await restart(tg, "web")
        first, status = answer.split("\n")
        assert first == "🟢 web@here restarted, healthy"
        assert status.startswith(f"🟢 web :{port} · pm2 pid ")
        text = await alert(tg, "✅ <b>service:here/web</b> recovered")
        assert "restarted, healthy" in text
        assert await node.alerts.open_alerts() == []
    finally:
        await node.stop()


@needs_pm2
async def test_restart_of_a_service_pm2_does_not_know_says_why_and_claims_nothing(
    tmp_path, monkeypatch, tg, pm2
):
    node = await start_node(tmp_path, monkeypatch, tg, {"name": "ghost"})
    try:
        (ask,) = await say(tg, GROUP, ADMIN, "/restart ghost")
        await press(tg, ADMIN, ask, 0)

        def answer() -> str | None:
            mine = [s.text for s in tg.sent if s.chat_id == GROUP and s.seq > ask.seq]
            return next((t for t in mine if "ghost" in t and "not found" in t), None)

        text = await within(15, answer)
        assert "restarted" not in text and "Traceback" not in text
        assert await node.alerts.open_alerts() == []
    finally:
        await node.stop()
