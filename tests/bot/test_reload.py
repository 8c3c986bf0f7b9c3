"""/reload through the real bot, on a node started from a real file: what a reload applies, what
it names as needing a restart, and a bad file refused with the old config kept."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.node import Node
from core.config import load_config
from core.localtelegram import LocalTelegram
from tests.auxil.botnode import ADMIN, GROUP, VIEWER
from tests.auxil.net import free_port
from tests.bot.test_bot import audited, confirmation, press, say

NEW_ADMIN = 400


def config_text(tmp_path: Path, tg: LocalTelegram, port: int, **parts: str) -> str:
    """The node's file: ``admins``, ``jobs`` (extra TOML), ``checkins`` and ``services``
    (extra TOML) and ``sidecar_port`` may be replaced."""
    return f"""
[node]
name = "test"
data_dir = "{tmp_path / "data"}"

[telegram]
token_env = "TEST_BOT_TOKEN"
api_base_url = "{tg.base_url}"
allowed_chats = [{GROUP}]
admins = {parts.get("admins", f"[{ADMIN}]")}
viewers = [{VIEWER}]

[sidecar]
host = "{parts.get("sidecar_host", "127.0.0.1")}"
{parts.get("sidecar", "")}
port = {parts.get("sidecar_port", port)}

[[machines]]
name = "here"
os = "linux"
address = "127.0.0.1"
local = true

[jobs.heartbeat]
every = "{parts.get("heartbeat", "1h")}"
output_path = "{tmp_path / "heartbeat.json"}"
{parts.get("jobs", "")}
{parts.get("extra", "")}
"""


class Fixture:
    def __init__(self, tmp_path: Path, tg: LocalTelegram) -> None:
        self.tmp_path, self.tg = tmp_path, tg
        self.path = tmp_path / "clawops.toml"
        self.port = free_port()

    def write(self, **parts: str) -> None:
        self.path.write_text(config_text(self.tmp_path, self.tg, self.port, **parts))


@pytest.fixture
async def setup(tmp_path, monkeypatch, tg) -> AsyncIterator[tuple[Fixture, Node]]:
    monkeypatch.setenv("TEST_BOT_TOKEN", "123456:test-token")
    files = Fixture(tmp_path, tg)
    files.write()
    node = Node(load_config(files.path))
    await node.start()
    yield files, node
    await node.stop()


async def reload_by(tg: LocalTelegram, user: int) -> tuple[str, str]:
    """Ask for /reload as ``user`` (an admin), confirm it: the question and the reply."""
    ask = await confirmation(tg, user, "/reload")
    await press(tg, user, ask, 0)
    for _ in range(200):
        edits = [s for s in tg.sent if s.kind == "edit" and s.message_id == ask.message_id]
        if edits and not edits[-1].text.startswith("⏳") and not edits[-1].buttons:
            return ask.text, edits[-1].text
        await asyncio.sleep(0.05)
    raise AssertionError("no reply to /reload")


async def test_a_reload_applies_admins_and_jobs_and_names_what_needs_a_restart(setup, tg):
    files, node = setup
    retention_next = node.scheduler.get_job("retention").next_run_time
    files.write(
        admins=f"[{ADMIN}, {NEW_ADMIN}]",
        heartbeat="30m",
        sidecar_port=str(free_port()),
        jobs='[[jobs.commands]]\nname = "hello"\nmachine = "here"\nevery = "5m"\n'
        'argv = ["echo", "hi"]\n',
    )
    question, reply = await reload_by(tg, ADMIN)
    assert "telegram.admins" in question and "jobs.commands (+hello)" in question
    assert "Needs a restart: sidecar.port" in question
    assert "✅ Config reloaded" in reply
    assert "telegram.admins" in reply and "jobs.heartbeat.every" in reply
    assert "Jobs: +hello; ~heartbeat" in reply
    assert "Needs a restart (still running the old value): sidecar.port" in reply
    # Applied: the new admin may run admin commands; the job is scheduled at its new interval;
    # an unchanged job keeps its next run; the sidecar still runs where it did.
    assert node.bot is not None and NEW_ADMIN in node.bot.admins
    assert node.scheduler.get_job("hello") is not None
    heartbeat = node.scheduler.get_job("heartbeat")
    assert heartbeat.trigger.interval.total_seconds() == 1800
    assert node.scheduler.get_job("retention").next_run_time == retention_next
    assert node.config.sidecar.port == files.port
    ask = await confirmation(tg, NEW_ADMIN, "/run hello")
    assert ask.buttons
    # Taking the admin away again applies too: the next update sees it.
    files.write()
    _, reply = await reload_by(tg, ADMIN)
    assert "Jobs: −hello; ~heartbeat" in reply and "sidecar.port" not in reply
    assert NEW_ADMIN not in node.bot.admins and node.scheduler.get_job("hello") is None
    await tg.inject_message(GROUP, NEW_ADMIN, "/mute 1h", username="gone")
    await audited(node, ("/mute", "ignored"))  # a stranger again: no reply


async def test_a_bad_file_is_refused_whole_and_an_alert_says_so(setup, tg):
    files, node = setup
    files.write(admins=f"[{ADMIN}, {NEW_ADMIN}]", heartbeat="often")
    _, reply = await reload_by(tg, ADMIN)
    assert "❌ Config refused" in reply and "the running config stays" in reply
    assert "jobs.heartbeat.every" in reply and "often" in reply
    assert NEW_ADMIN not in node.bot.admins
    state = await node.alerts.state("config:test")
    assert state is not None and state.state == "down"
    assert "jobs.heartbeat.every" in state.last_message
    # Fixed: the next reload applies it and the alert recovers.
    files.write(admins=f"[{ADMIN}, {NEW_ADMIN}]")
    _, reply = await reload_by(tg, ADMIN)
    assert "✅ Config reloaded" in reply and NEW_ADMIN in node.bot.admins
    state = await node.alerts.state("config:test")
    assert state is not None and state.state == "up"


async def test_a_file_the_next_start_would_refuse_is_refused(setup, tg, monkeypatch):
    files, node = setup
    monkeypatch.delenv("RELOAD_TEST_TOKEN", raising=False)
    sidecar = 'token_env = "RELOAD_TEST_TOKEN"'
    files.write(sidecar_host="0.0.0.0", sidecar=sidecar, admins=f"[{ADMIN}, {NEW_ADMIN}]")
    _, reply = await reload_by(tg, ADMIN)
    assert "❌ Config refused" in reply
    assert "the next start would refuse it: the sidecar would listen on 0.0.0.0" in reply
    assert NEW_ADMIN not in node.bot.admins


async def test_nothing_changed_says_so_and_a_viewer_cannot_reload(setup, tg):
    (denied,) = await say(tg, GROUP, VIEWER, "/reload")
    assert "is for admins" in denied.text
    question, reply = await reload_by(tg, ADMIN)
    assert "nothing has changed" in question and "nothing changed" in reply


async def test_a_removed_service_s_open_alert_is_closed_by_the_reload(setup, tg):
    files, node = setup
    service = '[[services]]\nname = "web"\nmachine = "here"\nmanager = "process"\n'
    files.write(extra=service)
    await node.reloader.reload("test")
    await node.alerts.observe("service:here/web", "critical", "down")
    files.write()
    outcome = await node.reloader.reload("test")
    assert "alert service:here/web closed: no longer in the config" in outcome.warnings
    state = await node.alerts.state("service:here/web")
    assert state is not None and state.state == "up"


async def test_two_reloads_at_once_apply_once(setup, tg):
    files, node = setup
    files.write(admins=f"[{ADMIN}, {NEW_ADMIN}]")
    first, second = await asyncio.gather(node.reloader.reload("one"), node.reloader.reload("two"))
    assert [first.changes.empty, second.changes.empty] == [False, True]


async def test_a_node_on_the_embedded_default_has_nothing_to_reload(tmp_path, monkeypatch, tg):
    from tests.auxil.botnode import start_test_node

    node = await start_test_node(tmp_path, monkeypatch, tg)
    try:
        outcome = await node.reloader.reload("test")
        assert not outcome.ok and "embedded default" in outcome.refused[0]
    finally:
        await node.stop()


def _status(url: str) -> dict:
    return httpx.get(f"{url}/api/status", timeout=5).json()


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def test_sighup_reloads_a_running_node_and_a_bad_file_raises_the_config_alert(tmp_path):
    from tests.bot.test_cli import Node as NodeProcess
    from tests.bot.test_cli import write_config

    port = free_port()
    db = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    config = write_config(tmp_path / "clawops.toml", db, port)
    node = NodeProcess(config, port)
    try:
        node.wait_up()
        jobs = [j["id"] for j in _status(node.url)["jobs"]]
        assert "hello" not in jobs
        job = '[[jobs.commands]]\nname = "hello"\nmachine = "local"\nevery = "5m"\nargv = ["true"]'
        config.write_text(
            config.read_text() + '\n[[machines]]\nname = "local"\nos = "linux"\n'
            'address = "127.0.0.1"\nlocal = true\n' + job + "\n"
        )
        node.proc.send_signal(signal.SIGHUP)
        _wait(lambda: "hello" in [j["id"] for j in _status(node.url)["jobs"]], "hello scheduled")
        good = config.read_text()
        config.write_text(good.replace('every = "5m"', 'every = "soon"'))
        node.proc.send_signal(signal.SIGHUP)
        _wait(
            lambda: any(a["key"] == "config:test-node" for a in _status(node.url)["alerts"]),
            "the config alert",
        )
        assert "hello" in [j["id"] for j in _status(node.url)["jobs"]]  # the old config stays
    finally:
        code, err = node.stop()
    assert code == 0, err
    assert "reload (SIGHUP): ✅ Config reloaded" in err
    assert "reload (SIGHUP) refused: jobs.commands[0] (hello).every" in err


def far(sshd, timeout: str) -> str:
    return (
        f'[[machines]]\nname = "far"\nos = "linux"\naddress = "{sshd.host}"\n'
        f'timeout = "{timeout}"\n'
        f'ssh = {{ host = "{sshd.host}", port = {sshd.port}, user = "{sshd.user}", '
        f'key = "{sshd.client_key}", known_hosts = "{sshd.known_hosts}" }}\n'
    )


async def test_a_changed_machine_gets_a_new_connection_and_the_old_one_is_closed_at_stop(
    tmp_path, monkeypatch, tg, sshd
):
    monkeypatch.setenv("TEST_BOT_TOKEN", "123456:test-token")
    files = Fixture(tmp_path, tg)
    files.write(extra=far(sshd, "10s"))
    node = Node(load_config(files.path))
    await node.start()
    try:
        old, here = node.fleet.executor("far"), node.fleet.executor("here")
        assert (await old.run(["echo", "one"])).stdout.strip() == "one"
        files.write(extra=far(sshd, "7s"))
        outcome = await node.reloader.reload("test")
        assert [c.text for c in outcome.changes.applied] == ["machines (~far)"]
        new = node.fleet.executor("far")
        assert new is not old and node.fleet.executor("here") is here  # unchanged: kept
        assert (await new.run(["echo", "two"])).stdout.strip() == "two"
        assert sshd.connections == 2 and old._conn is not None  # in flight work may finish
    finally:
        await node.stop()
    assert old._conn is None and new._conn is None
