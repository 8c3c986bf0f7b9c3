"""Fleet commands through the real bot: real listeners, a real PM2, a real SSH server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.node import Node
from core.localtelegram import LocalTelegram, Sent
from core.tables import alert_flips
from tests.auxil.botnode import HERE, start_test_node
from tests.auxil.net import free_port
from tests.auxil.sshd import SSHServer
from tests.bot.test_bot import ADMIN, GROUP, VIEWER, audit_outcomes, press, say
from tests.core.test_ports import start_listener
from tests.core.test_services import logs_showing, needs_pm2, start_crasher

PM2_NAME = "aphos-server-dev"
ALERTS = -700  # alerts go to their own chat, so replies in GROUP are only the replies


async def start_fleet_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tg: LocalTelegram, sshd: SSHServer,
    services: list[dict[str, Any]], *, here: dict[str, Any] | None = None,
    port_ranges: list[dict[str, Any]] | None = None, **sections: Any,
) -> Node:  # fmt: skip
    """The fleet "here" (this machine), "mini" (over the sshd fixture) and "msi" (unreachable);
    ``here`` adds keys to this machine, ``sections`` other config sections."""
    aphos = {
        "project": "aphos",
        "machine": "here",
        "range": "2567-2599",
        "default_port": 2567,
        "processes": ["node"],
    }
    return await start_test_node(
        tmp_path, monkeypatch, tg, telegram={"alert_chat": ALERTS},
        machines=[
            {**HERE, **(here or {})},
            {"name": "mini", "os": "linux", "address": "127.0.0.1", "timeout": "5s",
             "ssh": {"host": sshd.host, "port": sshd.port, "key": str(sshd.client_key),
                     "known_hosts": str(sshd.known_hosts)}},
            {"name": "msi", "os": "windows", "address": "127.0.0.1", "timeout": "1s",
             "ssh": {"host": "127.0.0.1", "port": free_port()}},
        ],
        services=services,
        port_ranges=[aphos] if port_ranges is None else port_ranges,
        **sections,
    )  # fmt: skip


@pytest.fixture
async def node(tmp_path, monkeypatch, tg, sshd) -> AsyncIterator[Node]:
    # "ollama" is a plain process that runs (a sleep), "gateway" one that does not.
    sleeper = await asyncio.create_subprocess_exec("sleep", "120")
    services = [
        {"name": "ollama", "machine": "mini", "manager": "process", "unit": "sleep",
         "health": {"type": "command", "argv": ["true"]}},
        {"name": "gateway", "machine": "mini", "manager": "process", "unit": "no-such-gateway",
         "health": {"type": "command", "argv": ["false"]}},
        {"name": "openssh", "machine": "msi", "manager": "windows", "unit": "sshd"},
    ]  # fmt: skip
    running = await start_fleet_node(tmp_path, monkeypatch, tg, sshd, services)
    yield running
    await running.stop()
    sleeper.kill()
    await sleeper.wait()


async def confirmed(tg: LocalTelegram, text: str, wait: float = 10.0) -> str:
    """Send an admin command, press Confirm, and return the text the question was edited to."""
    (ask,) = await say(tg, GROUP, ADMIN, text)
    assert ask.buttons, f"{text} asked no confirmation: {ask.text}"
    await press(tg, ADMIN, ask, 0)
    deadline = asyncio.get_running_loop().time() + wait
    while asyncio.get_running_loop().time() < deadline:
        edits = [s for s in tg.sent if s.kind == "edit" and s.message_id == ask.message_id]
        done = [e for e in edits if not e.text.startswith("⏳")]
        if done:
            return done[-1].text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text}: no result within {wait}s")


def only(items: list[Sent]) -> str:
    assert len(items) == 1, [i.text for i in items]
    return items[0].text


async def test_status_shows_machines_up_and_down_and_the_unhealthy_services(node, tg):
    text = only(await say(tg, GROUP, VIEWER, "/status", wait=10.0))
    assert "Machines 2/3 up" in text and "🔴 msi" in text and "🟢 mini" in text
    assert "❌ gateway@mini" in text and "ollama@mini" not in text
    assert "1 service(s) on unreachable machines" in text
    summary = await node.status_summary()
    machines = {m["name"]: m for m in summary["machines"]}
    assert machines["msi"]["reachable"] is False and machines["here"]["reachable"] is True
    services = {s["name"]: s for s in summary["services"]}
    assert services["gateway"]["healthy"] is False and services["openssh"]["healthy"] is None


async def test_a_sweep_alerts_once_per_machine_down_and_suppresses_its_services(node, tg):
    await say(tg, GROUP, VIEWER, "/health", wait=10.0)
    await say(tg, GROUP, VIEWER, "/health", wait=10.0)
    down = {a.key: a.last_message for a in await node.alerts.open_alerts()}
    assert set(down) == {"machine:msi", "service:mini/gateway"}
    assert "1 service(s) on it not checked" in down["machine:msi"]
    # Two sweeps, one flip per key: nothing is alerted twice.
    async with node.db.connect() as conn:
        flips = (await conn.execute(
            select(alert_flips.c.key, alert_flips.c.new_state).order_by(alert_flips.c.id)
        )).all()  # fmt: skip
    assert sorted(tuple(f) for f in flips) == [
        ("machine:msi", "down"),
        ("service:mini/gateway", "down"),
    ]
    for _ in range(50):
        alerted = [s.text for s in tg.sent if s.chat_id == ALERTS]
        if len(alerted) == 2:
            break
        await asyncio.sleep(0.1)
    assert sorted(a.split("\n")[0] for a in alerted) == [
        "🔴 <b>machine:msi</b> is down",
        "🔴 <b>service:mini/gateway</b> is down",
    ]


async def test_health_reports_an_unreachable_machine_and_still_checks_the_others(node, tg):
    text = only(await say(tg, GROUP, VIEWER, "/health", wait=10.0))
    assert "🔴 <b>msi</b> unreachable" in text
    assert "🟢 <b>here</b>" in text and "🟢 <b>mini</b>" in text and "mem " in text
    assert "✅ ollama@mini" in text and "❌ gateway@mini" in text
    assert "⏸ openssh@msi" in text
    one = only(await say(tg, GROUP, VIEWER, "/health mini", wait=10.0))
    assert "<b>mini</b>" in one and "msi" not in one


async def test_ports_names_who_holds_a_port_and_kill_ends_exactly_that_process(node, tg):
    port = free_port()
    target = await start_listener(port)
    bystander = await start_listener(free_port())
    try:
        held = only(await say(tg, GROUP, VIEWER, f"/ports {port}"))
        assert f"pid {target.pid}" in held and "python" in held
        listing = only(await say(tg, GROUP, VIEWER, "/ports here"))
        assert str(port) in listing
        result = await confirmed(tg, f"/kill {port}")
        assert f"Port {port} on here: ended" in result and f"pid {target.pid}" in result
        await asyncio.wait_for(target.wait(), 5)
        assert bystander.returncode is None
        assert "free" in only(await say(tg, GROUP, VIEWER, f"/ports {port}"))
    finally:
        for proc in (target, bystander):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert ("kill", "ok") in await audit_outcomes(node, 5)


async def test_a_listener_inside_a_reserved_range_is_reported_as_a_conflict(node, tg):
    try:
        squatter = await start_listener(2569)
    except AssertionError:
        pytest.skip("port 2569 is taken on this machine")
    try:
        listing = only(await say(tg, GROUP, VIEWER, "/ports here"))
        assert "⚠️ :2569" in listing and "aphos" in listing
    finally:
        squatter.kill()
        await squatter.wait()


@pytest.mark.parametrize(
    "text",
    [
        "/restart ollama;touch${IFS}PWNED",
        "/restart $(touch PWNED)",
        "/logs `touch PWNED`",
        "/logs ollama mini 5;touch",
        "/services mini&&touch",
        "/health ../../etc",
        "/kill 22;reboot",
        "/kill 70000",
    ],
)
async def test_injection_attempts_are_refused_and_nothing_runs(
    node, tg, sshd, text, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    before = list(sshd.commands)
    (answer,) = await say(tg, GROUP, ADMIN, text)
    reply = answer.text
    assert not answer.buttons, "a bad argument must be refused before any confirmation"
    assert any(word in reply for word in ("Usage", "not allowed", "no service", "no machine",
                                          "between", "port")), reply  # fmt: skip
    await asyncio.sleep(0.2)
    assert sshd.commands == before
    assert not (tmp_path / "PWNED").exists()


async def test_logs_of_a_service_without_a_log_source_says_why(node, tg):
    reply = only(await say(tg, GROUP, VIEWER, "/logs ollama 5"))
    assert "log" in reply.lower() and "Traceback" not in reply


@pytest.mark.parametrize("count", ["³", "٥", "0", "2001"])
async def test_logs_take_only_ascii_digits_between_1_and_2000_as_a_line_count(node, tg, count):
    reply = only(await say(tg, GROUP, VIEWER, f"/logs ollama {count}"))
    expected = "ASCII digits only" if not count.isascii() else "between 1 and 2000"
    assert expected in reply and "Traceback" not in reply


async def test_a_viewer_cannot_restart_or_kill(node, tg):
    for text in ("/restart ollama", "/kill 9"):
        reply = only(await say(tg, GROUP, VIEWER, text))
        assert "for admins" in reply


# -- PM2, for real, through the bot ----------------------------------------------------------


@needs_pm2
async def test_restart_of_a_pm2_service_reports_it_running_with_a_new_pid(
    tmp_path, monkeypatch, tg, sshd, pm2
):
    services = [{"name": PM2_NAME, "machine": "here", "manager": "pm2", "restart_settle": "1s"}]
    node = await start_fleet_node(tmp_path, monkeypatch, tg, sshd, services)
    try:
        listed = only(await say(tg, GROUP, VIEWER, "/services here"))
        assert f"🟢 {PM2_NAME}" in listed and "pm2 pid" in listed
        pid_before = listed.split("pid ")[1].split()[0]
        result = await confirmed(tg, f"/restart {PM2_NAME}")
        assert result.startswith(f"🟢 {PM2_NAME}@here restarted, healthy\n"), result
        assert "pid " in result and f"pid {pid_before}" not in result and "↻1" in result
        logs = only(await say(tg, GROUP, VIEWER, f"/logs {PM2_NAME} 20"))
        assert "aphos listening" in logs
    finally:
        await node.stop()


@needs_pm2
async def test_logs_of_a_crashed_pm2_service_show_both_streams_marked_and_no_banner(
    tmp_path, monkeypatch, tg, sshd, pm2
):
    await start_crasher(tmp_path)
    services = [{"name": "crasher", "machine": "here", "manager": "pm2"}]
    node = await start_fleet_node(tmp_path, monkeypatch, tg, sshd, services)
    try:
        manager = node.fleet.manager(node.fleet.service("crasher", None))
        await logs_showing(manager, "stderr", "boom")  # PM2 has written its files
        reply = only(await say(tg, GROUP, VIEWER, "/logs crasher here 20"))
        assert reply.startswith("📄 crasher@here, last 20 lines\n<b>stdout</b> <code>")
        assert "crasher-out.log</code>\n<pre>crasher starting</pre>" in reply
        assert "<b>stderr</b> <code>" in reply
        assert "crasher-error.log</code>\n<pre>boom: cannot open the database</pre>" in reply
        assert "TAILING" not in reply and "[PM2]" not in reply
    finally:
        await node.stop()
