"""/kill through the real bot: what it refuses before any confirmation, what its confirmation
names; /ports judging ownership by process (real listeners, a real PM2, the SSH fixture)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.node import Node
from core.db import Database
from core.executors import LocalExecutor
from core.localtelegram import LocalTelegram, Sent
from core.minis import Minis
from core.ports import holders, listeners
from tests.auxil.botnode import start_test_node
from tests.auxil.net import free_port
from tests.auxil.pm2apps import start_python_server
from tests.auxil.tcpproxy import TcpProxy, through
from tests.bot.test_bot import ADMIN, GROUP, VIEWER, audit_outcomes, press, say
from tests.bot.test_fleet_commands import only, start_fleet_node
from tests.core.test_ports import HERE, start_listener
from tests.core.test_services import needs_pm2


@pytest.fixture
async def guarded(tmp_path, monkeypatch, tg, sshd) -> AsyncIterator[tuple[Node, int, int]]:
    """A fleet node with one globally protected port and one protected on "here"."""
    everywhere, here_only = free_port(), free_port()
    node = await start_fleet_node(
        tmp_path,
        monkeypatch,
        tg,
        sshd,
        [],
        here={"protected_ports": [here_only]},
        protected_ports=[everywhere],
    )
    yield node, everywhere, here_only
    await node.stop()


@pytest.fixture
async def listening() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Listeners a test starts with ``start_listener``; any still running are killed after."""
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def refused(tg: LocalTelegram, text: str) -> str:
    (answer,) = await say(tg, GROUP, ADMIN, text)
    assert not answer.buttons, f"{text} asked for a confirmation: {answer.text}"
    return answer.text


async def still_listens(port: int) -> bool:
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    writer.close()
    return True


async def test_kill_of_the_nodes_sidecar_is_refused_before_any_confirmation(guarded, tg):
    node, _, _ = guarded
    port = node.config.sidecar.port
    reply = await refused(tg, f"/kill {port}")
    assert f"here:{port} is this node's sidecar; refusing to end it" in reply
    # "mini" is reached over SSH but its address is loopback: the node runs there too.
    assert "this node's sidecar" in await refused(tg, f"/kill {port} mini")
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{port}/healthz", timeout=5)).status_code == 200
    assert await audit_outcomes(node, 2) == [("kill", "error"), ("kill", "error")]


async def test_kill_of_a_machines_ssh_port_is_refused_and_nothing_runs_there(guarded, tg, sshd):
    node, _, _ = guarded
    before = list(sshd.commands)
    reply = await refused(tg, f"/kill {sshd.port} mini")
    assert f"mini:{sshd.port} is mini's SSH port; refusing to end it" in reply
    assert sshd.commands == before, "not even a listing ran on mini"
    assert (await node.fleet.executors["mini"].run(["true"])).ok
    # On "here" that port is no SSH port, but what holds it is this very process (the fixture's
    # SSH server runs in the test, as the node does): refused for that.
    mine = await refused(tg, f"/kill {sshd.port}")
    assert f"held by this node's own process (pid {os.getpid()})" in mine


async def test_kill_of_a_protected_port_is_refused_and_its_listener_lives(guarded, tg, listening):
    _, everywhere, here_only = guarded
    listening += [await start_listener(everywhere), await start_listener(here_only)]
    reply = await refused(tg, f"/kill {everywhere}")
    assert f"here:{everywhere} is a protected port (protected_ports)" in reply
    reply = await refused(tg, f"/kill {here_only}")
    assert f"here:{here_only} is a protected port of here (machines.protected_ports)" in reply
    assert all(p.returncode is None for p in listening)
    assert await still_listens(everywhere) and await still_listens(here_only)


async def test_kill_of_a_mini_agents_port_is_refused(guarded, tg, listening):
    node, _, _ = guarded
    port = free_port()
    listening.append(await start_listener(port))
    await Minis(node.db).add(
        "mini1",
        f"http://127.0.0.1:{port}",
        ports="3001-3100",
        capacity=1,
        agent_token_env="MINI1_AGENT_TOKEN",
    )
    reply = await refused(tg, f"/kill {port}")
    assert f"here:{port} is the clawops agent of Mini mini1; refusing" in reply
    assert listening[0].returncode is None and await still_listens(port)


async def test_kill_of_a_port_nobody_listens_on_is_refused_before_any_confirmation(guarded, tg):
    port = free_port()
    assert f"nothing listens on :{port} on here" in await refused(tg, f"/kill {port}")


async def test_kill_on_a_machine_that_does_not_answer_is_refused_with_the_reason(guarded, tg):
    reply = await refused(tg, "/kill 8080 msi")
    assert reply.startswith("❌ msi") and "SSH" in reply


async def test_kill_is_refused_while_the_database_that_lists_the_agents_is_silent(
    tmp_path, monkeypatch, tg, pg_url, listening
):
    direct = Database(pg_url)
    await direct.upgrade()
    await direct.close()
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    database = {"url": through(pg_url, proxy), "timeout": "1s"}
    node = await start_test_node(tmp_path, monkeypatch, tg, database=database)
    try:
        port = free_port()
        listening.append(await start_listener(port))
        proxy.silence()  # the agents' ports cannot be known: nothing may be ended
        reply = await refused(tg, f"/kill {port}")
        assert reply == "⚠️ database unavailable: no answer within 1s"
        assert listening[0].returncode is None and await still_listens(port)
    finally:
        proxy.resume()
        await node.stop()
        await proxy.stop()


@pytest.mark.parametrize("text", ["/kill ³", "/kill ١٢", "/kill 8O80", "/kill 12³ here"])
async def test_kill_takes_ascii_digits_only(guarded, tg, text):
    reply = await refused(tg, text)
    assert "Usage: <code>/kill PORT [machine]</code>" in reply and "internal error" not in reply


@pytest.mark.parametrize("text", ["/ports ³", "/ports ١٢ here"])
async def test_ports_takes_ascii_digits_only(guarded, tg, text):
    reply = only(await say(tg, GROUP, VIEWER, text))
    assert "is not allowed" in reply and "internal error" not in reply


async def ask(tg: LocalTelegram, text: str) -> Sent:
    (question,) = await say(tg, GROUP, ADMIN, text)
    assert question.buttons, f"{text} asked no confirmation: {question.text}"
    return question


async def cancel(tg: LocalTelegram, question: Sent) -> None:
    await press(tg, ADMIN, question, 1)
    for _ in range(100):
        edits = [s for s in tg.sent if s.kind == "edit" and s.message_id == question.message_id]
        if edits and "Cancelled" in edits[-1].text:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the confirmation was not cancelled")


async def test_the_confirmation_names_the_pid_its_command_line_and_no_service(
    guarded, tg, listening
):
    port = free_port()
    listening.append(await start_listener(port))
    question = await ask(tg, f"/kill {port}")
    pid = listening[0].pid
    assert f"• pid {pid} · no service" in question.text
    assert "-c import socket,sys,time" in question.text  # its command line, from ps
    await cancel(tg, question)
    assert listening[0].returncode is None and await still_listens(port)


# -- a PM2 service, for real ----------------------------------------------------------------


async def wait_listening(port: int) -> int:
    for _ in range(200):
        held = holders(await listeners(HERE, LocalExecutor(HERE)), port)
        if held and held[0].pid:
            return held[0].pid
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listened on {port}")


@needs_pm2
async def test_a_pm2_service_on_its_reserved_port_is_owned_and_named_in_the_confirmation(
    tmp_path,
    monkeypatch,
    tg,
    sshd,
    pm2,
    listening,
):
    port, stray = free_port(), free_port()
    await start_python_server("web", port)
    pid = await wait_listening(port)
    listening.append(await start_listener(stray))
    low, high = min(port, stray), max(port, stray)
    node = await start_fleet_node(
        tmp_path,
        monkeypatch,
        tg,
        sshd,
        [{"name": "web", "machine": "here", "manager": "pm2", "port": port}],
        port_ranges=[
            {"project": "web", "machine": "here", "range": f"{low}-{high}", "processes": ["node"]}
        ],
    )
    try:
        listing = only(await say(tg, GROUP, VIEWER, "/ports here", wait=10.0))
        assert f"⚠️ :{port} " not in listing
        assert f"⚠️ :{stray} port of web ({low}-{high}) held by python" in listing
        who = only(await say(tg, GROUP, VIEWER, f"/ports {port}", wait=10.0))
        assert f"(pid {pid}, service web)" in who
        question = await ask(tg, f"/kill {port}")
        assert f"• pid {pid} · service web (pm2)" in question.text
        assert f"-m http.server {port} --bind 127.0.0.1" in question.text
        await cancel(tg, question)
        assert await still_listens(port)
    finally:
        await node.stop()
