"""The bot never freezes and shows long work: through the real bot on the local Bot API, with
test commands that block on an event until the test lets them go."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.commands import Command, Context, Reply
from bot.format import esc
from bot.node import Node
from core.crypto import generate_key
from core.localtelegram import LocalTelegram, Sent
from core.minis import Minis
from tests.auxil.botnode import ADMIN, GROUP, HERE, VIEWER, start_test_node
from tests.auxil.fakeagent import FakeAgent
from tests.bot.test_bot import audit_outcomes, confirmation, press, say


@dataclass
class Hold:
    """What the test commands wait on, and what they tell the test."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    step: asyncio.Event = field(default_factory=asyncio.Event)
    progress: list[str] = field(default_factory=lambda: ["one"])

    def commands(self) -> list[Command]:
        async def hold(ctx: Context) -> Reply:
            self.started.set()
            await self.release.wait()
            return Reply(f"held {esc(ctx.inv.args_text)}".strip())

        async def steps(ctx: Context) -> Reply:
            await ctx.progress(self.progress[0])
            self.started.set()
            await self.step.wait()
            for text in self.progress[1:]:
                await ctx.progress(text)
            await self.release.wait()
            return Reply("all steps done")

        return [
            Command("hold", "waits for the test", hold),
            Command("holdhard", "waits for the test", hold, role="admin", mutates=True),
            Command("steps", "reports progress, waits for the test", steps),
        ]


async def start(tmp_path: Path, monkeypatch, tg: LocalTelegram, hold: Hold, **telegram) -> Node:
    return await start_test_node(
        tmp_path, monkeypatch, tg, telegram=telegram, commands=hold.commands()
    )


@pytest.fixture
def hold() -> Hold:
    return Hold()


@pytest.fixture
async def node(tmp_path, monkeypatch, tg, hold) -> AsyncIterator[Node]:
    running = await start(tmp_path, monkeypatch, tg, hold)  # progress after the default 2 s
    yield running
    hold.release.set()
    await running.stop()


@pytest.fixture
async def patient(tmp_path, monkeypatch, tg, hold) -> AsyncIterator[Node]:
    """A node that shows no progress for a minute: the chat's order alone."""
    running = await start(tmp_path, monkeypatch, tg, hold, progress_after="60s")
    yield running
    hold.release.set()
    await running.stop()


@pytest.fixture
async def quick(tmp_path, monkeypatch, tg, hold) -> AsyncIterator[Node]:
    """A node that shows progress after 100 ms."""
    running = await start(tmp_path, monkeypatch, tg, hold, progress_after="100ms")
    yield running
    hold.release.set()
    await running.stop()


async def until(tg: LocalTelegram, found: Callable[[], list[Sent]], wait: float = 5.0) -> Sent:
    """The first item ``found`` returns, waiting for what the bot sends up to ``wait``."""
    deadline = asyncio.get_running_loop().time() + wait
    while not found():
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise AssertionError(f"not sent within {wait} s: {[s.text for s in tg.sent]}")
        await tg.wait_sent(tg.sent[-1].seq if tg.sent else 0, left, actions=True)
    return found()[0]


async def test_a_confirmed_long_command_holds_up_no_command_and_no_button(node, tg, hold):
    ask = await confirmation(tg, ADMIN, "/holdhard job")
    await press(tg, ADMIN, ask, 0)
    await asyncio.wait_for(hold.started.wait(), 5)
    # In the same chat, in another chat, and a button on another confirmation: all answered.
    (help_here,) = await say(tg, GROUP, VIEWER, "/help")
    assert "/status" in help_here.text
    (status,) = await say(tg, VIEWER, VIEWER, "/status")
    assert "primary" in status.text
    other = await confirmation(tg, ADMIN, "/mute 5m")
    answered = await press(tg, ADMIN, other, 1)
    assert "Cancelled." in [i.text for i in answered if i.kind == "answer"]
    # The long one is still running: its question says so, with no buttons left to press.
    edits = [s for s in tg.sent if s.message_id == ask.message_id and s.kind == "edit"]
    assert [e.text for e in edits] == ["⏳ Running <code>/holdhard job</code>…"]
    assert not edits[-1].buttons
    hold.release.set()
    done = await until(tg, lambda: [s for s in tg.sent if s.text == "held job"])
    assert done.kind == "edit" and done.message_id == ask.message_id
    assert ("holdhard", "ok") in await audit_outcomes(node, 6)


async def test_one_chats_replies_come_in_the_order_of_its_commands(patient, tg, hold):
    await tg.inject_message(GROUP, VIEWER, "/hold first", username="viewer")
    await asyncio.wait_for(hold.started.wait(), 5)
    await tg.inject_message(GROUP, VIEWER, "/help", username="viewer")
    # Another chat is answered meanwhile; the group's /help waits for the /hold before it.
    (private,) = await say(tg, VIEWER, VIEWER, "/help")
    assert "/status" in private.text
    assert [s for s in tg.sent if s.chat_id == GROUP and s.kind != "action"] == []
    hold.release.set()
    await until(tg, lambda: [s for s in tg.sent if s.chat_id == GROUP and "/status" in s.text])
    replies = [s for s in tg.sent if s.chat_id == GROUP and s.kind != "action"]
    assert [s.text.splitlines()[0] for s in replies] == [
        "held first",
        "<b>clawops</b>: what I can do here",
    ]


async def test_a_long_command_shows_typing_then_one_progress_message_the_reply_edits(
    quick, tg, hold
):
    hold.progress = ["step 1 of 4", "step 2 of 4", "step 3 of 4", "step 4 of 4"]
    await tg.inject_message(VIEWER, VIEWER, "/steps", username="viewer")
    first = await until(tg, lambda: [s for s in tg.sent if s.text.startswith("⏳")])
    assert (first.kind, first.text, first.chat_id) == ("message", "⏳ step 1 of 4", VIEWER)
    typing = await until(tg, lambda: [s for s in tg.sent if s.kind == "action"])
    assert (typing.text, typing.chat_id) == ("typing", VIEWER)
    # The progress message is its answer: the chat's next command is not held up by it.
    (help_reply,) = await say(tg, VIEWER, VIEWER, "/help")
    assert "/status" in help_reply.text
    # Steps 2 to 4 come at once: at most one edit per second, so step 3 is never shown (2 may
    # be, if a second has passed since step 1), and the latest text is shown in the end.
    hold.step.set()
    last = await until(tg, lambda: [s for s in tg.sent if s.text == "⏳ step 4 of 4"])
    assert (last.kind, last.message_id) == ("edit", first.message_id)
    assert not [s for s in tg.sent if s.text == "⏳ step 3 of 4"]
    hold.release.set()
    done = await until(tg, lambda: [s for s in tg.sent if s.text == "all steps done"])
    assert (done.kind, done.message_id) == ("edit", first.message_id)
    bot_messages = [s for s in tg.sent if s.chat_id == VIEWER and s.kind == "message"]
    assert [m.message_id for m in bot_messages] == [first.message_id, help_reply.message_id]


async def test_a_long_command_without_progress_holds_its_chat_only_until_its_working_message(
    quick, tg, hold
):
    await tg.inject_message(GROUP, VIEWER, "/hold <b>", username="viewer")
    await tg.inject_message(GROUP, VIEWER, "/help", username="viewer")
    shown = await until(tg, lambda: [s for s in tg.sent if s.chat_id == GROUP])
    assert (shown.kind, shown.text) == ("message", "⏳ <code>/hold &lt;b&gt;</code> is running…")
    helped = await until(tg, lambda: [s for s in tg.sent if "/status" in s.text])
    assert helped.kind == "message" and not hold.release.is_set()
    hold.release.set()
    done = await until(tg, lambda: [s for s in tg.sent if s.text.startswith("held")])
    assert (done.kind, done.message_id, done.text) == ("edit", shown.message_id, "held &lt;b&gt;")


async def test_progress_reported_before_the_threshold_shows_its_latest_text_at_it(quick, tg, hold):
    hold.progress = ["queued"]
    await tg.inject_message(GROUP, VIEWER, "/steps", username="viewer")
    shown = await until(tg, lambda: [s for s in tg.sent if s.chat_id == GROUP])
    assert (shown.kind, shown.text) == ("message", "⏳ queued")
    hold.step.set()
    hold.release.set()
    done = await until(tg, lambda: [s for s in tg.sent if s.text == "all steps done"])
    assert done.message_id == shown.message_id


async def test_a_quick_command_shows_no_typing_and_no_progress(node, tg):
    (reply,) = await say(tg, GROUP, VIEWER, "/help")
    assert reply.kind == "message"
    assert [s.kind for s in tg.sent] == ["message"]


async def test_a_deleted_progress_message_still_gets_the_reply(quick, tg, hold):
    hold.progress = ["working"]
    await tg.inject_message(VIEWER, VIEWER, "/steps", username="viewer")
    shown = await until(tg, lambda: [s for s in tg.sent if s.text == "⏳ working"])
    del tg.messages[(VIEWER, shown.message_id or 0)]  # the user deleted it
    hold.step.set()
    hold.release.set()
    done = await until(tg, lambda: [s for s in tg.sent if s.text == "all steps done"])
    assert done.kind == "message" and done.message_id != shown.message_id


@pytest.fixture
async def wedged_port() -> AsyncIterator[int]:
    """A TCP port that accepts and never says a word (a wedged sshd)."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def test_health_shows_machine_by_machine_progress_then_its_report(
    tmp_path, monkeypatch, tg, wedged_port
):
    ssh = {"host": "127.0.0.1", "port": wedged_port}
    wedged = {"name": "wedged", "os": "linux", "address": "127.0.0.1", "timeout": "1s", "ssh": ssh}
    node = await start_test_node(
        tmp_path, monkeypatch, tg, telegram={"progress_after": "100ms"}, machines=[HERE, wedged]
    )
    try:
        await tg.inject_message(VIEWER, VIEWER, "/health", username="viewer")
        shown = await until(tg, lambda: [s for s in tg.sent if s.text.startswith("⏳")])
        assert (shown.kind, shown.text) == ("message", "⏳ Health: 1/2 machines (here up)")
        report = await until(tg, lambda: [s for s in tg.sent if "swept in" in s.text])
        assert (report.kind, report.message_id) == ("edit", shown.message_id)
        assert "🔴 <b>wedged</b> unreachable" in report.text and "🟢 <b>here</b>" in report.text
    finally:
        await node.stop()


async def test_a_claw_that_never_gets_ready_shows_its_steps_then_the_failure(
    tmp_path, monkeypatch, tg
):
    monkeypatch.setenv("RESPONSIVE_CLAWS_KEY", generate_key())
    monkeypatch.setenv("RESPONSIVE_AGENT_TOKEN", FakeAgent.token)
    agent = await FakeAgent(fault="never-ready").start()
    claws = {"secret_key_env": "RESPONSIVE_CLAWS_KEY", "provision_timeout": "2s"}
    org = {"slug": "acme", "name": "Acme", "members": [ADMIN]}
    node = await start_test_node(
        tmp_path, monkeypatch, tg, telegram={"progress_after": "100ms"}, claws=claws, orgs=[org]
    )
    try:
        token_env = "RESPONSIVE_AGENT_TOKEN"
        await Minis(node.db).add(
            "mini-1", agent.url, ports="3001-3010", capacity=5, agent_token_env=token_env
        )
        (ask,) = await say(tg, ADMIN, ADMIN, "/claw new acme support")
        await tg.press(ADMIN, ADMIN, ask.message_id or 0, ask.buttons[0][0]["callback_data"])
        failed = await until(tg, lambda: [s for s in tg.sent if s.text.startswith("❌")], 10.0)
        edits = [s.text for s in tg.sent if s.kind == "edit" and s.message_id == ask.message_id]
        assert edits[0] == "⏳ Running <code>/claw new acme support</code>…"
        steps = [e for e in edits if e.startswith("⏳ Claw <b>acme/support</b>: ")]
        assert steps and "waiting for the gateway's handshake · " in steps[-1], edits
        assert edits[-1] == failed.text and "provisioning failed at ready" in failed.text
        # One message (the question); everything after it was an edit of it.
        assert [s.kind for s in tg.sent if s.chat_id == ADMIN].count("message") == 1
    finally:
        await node.stop()
        await agent.stop()


async def test_a_command_running_at_stop_is_let_finish_and_answer(tmp_path, monkeypatch, tg, hold):
    node = await start(tmp_path, monkeypatch, tg, hold)
    await tg.inject_message(VIEWER, VIEWER, "/hold last", username="viewer")
    await asyncio.wait_for(hold.started.wait(), 5)
    stopping = asyncio.create_task(node.stop())
    assert node.bot is not None
    for _ in range(100):  # until the bot is stopping: no more updates, waiting for commands
        await asyncio.wait({stopping}, timeout=0.05)
        if not node.bot.polling:
            break
    assert not node.bot.polling and not stopping.done()
    hold.release.set()
    await asyncio.wait_for(stopping, 10)
    assert [s.text for s in tg.sent if s.chat_id == VIEWER and s.kind == "message"] == ["held last"]


async def test_a_command_ending_while_its_working_message_is_sent_edits_that_message(
    quick, tg, hold
):
    # Telegram is slow to take the working message; the command ends meanwhile. Its reply must
    # edit that message, not leave it saying "running…" forever beside a second one.
    gate = tg.gates["sendMessage"] = asyncio.Event()
    await tg.inject_message(GROUP, VIEWER, "/hold x", username="viewer")
    await asyncio.wait_for(hold.started.wait(), 5)
    for _ in range(100):
        if tg.waiting.get("sendMessage"):
            break
        await tg.wait_sent(tg.sent[-1].seq if tg.sent else 0, 0.1, actions=True)
    assert tg.waiting.get("sendMessage") == 1, "the working message never went out"
    hold.release.set()
    for _ in range(20):
        await asyncio.sleep(0)  # the command returns and its run ends, as far as it can
    gate.set()
    done = await until(tg, lambda: [s for s in tg.sent if s.text == "held x"])
    shown = [s for s in tg.sent if s.chat_id == GROUP and s.kind == "message"]
    assert [s.text for s in shown] == ["⏳ <code>/hold x</code> is running…"]
    assert (done.kind, done.message_id) == ("edit", shown[0].message_id)
