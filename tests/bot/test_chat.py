"""`clawops chat` on a real terminal (a pty) against a real node in local Bot API mode: what the
bot sends or edits is printed when it arrives, not after the next line typed."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import signal
import stat
import subprocess
import termios
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from bot.chat import in_thread
from bot.node import LOCAL_OPERATOR, Node
from core.config import LoadedConfig, parse_config
from tests.auxil.net import free_port
from tests.bot.test_cli import CLAWOPS


def _take_terminal() -> None:
    """In the child, a new session's leader: make the pty its controlling terminal, so that
    Ctrl-C typed there is a SIGINT, as in a real terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A program on a pseudo-terminal: what it prints is collected by a thread; ``expect``
    waits (with a deadline) for text that has not been matched yet."""

    def __init__(
        self, argv: list[str], env: dict[str, str], preexec: Callable[[], None] = _take_terminal
    ) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=preexec,
        )
        os.close(slave)
        self.master = master
        self.output = ""
        self.cursor = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # the program ended: the pty is gone
                return
            if not data:
                return
            self.output += data.decode("utf-8", "replace")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def expect(self, text: str, wait: float = 20.0) -> str:
        """The output from the last match up to and including ``text``."""
        deadline = asyncio.get_running_loop().time() + wait
        while (found := self.output.find(text, self.cursor)) < 0:
            if asyncio.get_running_loop().time() > deadline:
                after = self.output[self.cursor :]
                raise AssertionError(f"{text!r} not printed; after the last match: {after!r}")
            await asyncio.sleep(0.05)
        start, self.cursor = self.cursor, found + len(text)
        return self.output[start : self.cursor]

    async def exit_status(self, wait: float = 20.0) -> int:
        try:
            return await asyncio.to_thread(self.proc.wait, wait)
        except subprocess.TimeoutExpired:
            tail = self.output[-500:]
            raise AssertionError(f"still running after {wait:g} s; it printed: {tail!r}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)


def write_config(tmp_path: Path) -> tuple[Path, dict]:
    raw = {
        "node": {"name": "local", "data_dir": str(tmp_path / "data")},
        "telegram": {"token_env": "NO_SUCH_BOT_TOKEN", "local_api_port": free_port()},
        "sidecar": {"port": free_port()},
    }
    path = tmp_path / "clawops.toml"
    path.write_text(
        f'[node]\nname = "local"\ndata_dir = "{raw["node"]["data_dir"]}"\n'
        f'[telegram]\ntoken_env = "NO_SUCH_BOT_TOKEN"\n'
        f"local_api_port = {raw['telegram']['local_api_port']}\n"
        f"[sidecar]\nport = {raw['sidecar']['port']}\n"
    )
    return path, raw


@pytest.fixture
async def node_and_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Node, Path]]:
    monkeypatch.delenv("NO_SUCH_BOT_TOKEN", raising=False)
    path, raw = write_config(tmp_path)
    node = Node(LoadedConfig(parse_config(raw), path))
    await node.start()
    try:
        yield node, path
    finally:
        await node.stop()


@pytest.fixture
async def terminal(node_and_config) -> AsyncIterator[Terminal]:
    _, path = node_and_config
    env = {**os.environ, "TERM": "xterm", "CLAWOPS_TELEGRAM_TOKEN": ""}
    term = Terminal([*CLAWOPS, "chat", "--config", str(path)], env)
    try:
        await term.expect("Ctrl-D quits.")
        await term.expect("> ")
        yield term
    finally:
        term.close()


async def post_critical(node: Node, message: str) -> None:
    url = f"http://127.0.0.1:{node.config.sidecar.port}/api/log"
    body = {"jobId": "backup", "status": "critical", "message": message}
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(url, json=body)).status_code == 201


async def test_an_alert_is_printed_while_the_client_waits_for_input(node_and_config, terminal):
    node, _ = node_and_config
    terminal.type("/hel")  # half a line typed, not sent
    await terminal.expect("/hel")
    await post_critical(node, "disk full on the mini")
    await terminal.expect("disk full on the mini")
    await terminal.expect("> /hel")  # the line being typed is drawn again below the alert
    terminal.type("p\n")
    await terminal.expect("/status")  # the rest of the line was kept: /help answered
    terminal.type("\x04")  # Ctrl-D
    assert await terminal.exit_status() == 0


async def test_a_reply_and_a_later_edit_are_printed_without_further_input(
    node_and_config, terminal
):
    node, _ = node_and_config
    terminal.type("/help\n")
    await terminal.expect("/status")
    await terminal.expect("> ")  # the prompt is back: the client waits for input again
    assert node.local_api is not None
    (reply,) = [s for s in node.local_api.sent if s.chat_id == LOCAL_OPERATOR]
    # What a command's progress message does: the bot edits its answer later.
    await node.bot.app.bot.edit_message_text(
        "Still working: 3/5 machines", chat_id=LOCAL_OPERATOR, message_id=reply.message_id
    )
    await terminal.expect("(edited) Still working: 3/5 machines")
    terminal.type("2\n")  # a number presses a button; /help's answer has none
    await terminal.expect("no such button")
    terminal.type("\x04")
    assert await terminal.exit_status() == 0


async def test_typed_lines_are_kept_in_a_private_history_file(node_and_config, terminal):
    node, path = node_and_config
    terminal.type("/help\n")
    await terminal.expect("/status")
    terminal.type("\x04")
    assert await terminal.exit_status() == 0
    history = node.loaded.data_dir / "chat_history"
    assert history.read_text() == "/help\n"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    # The next session has it: the up arrow brings /help back.
    env = {**os.environ, "TERM": "xterm", "CLAWOPS_TELEGRAM_TOKEN": ""}
    again = Terminal([*CLAWOPS, "chat", "--config", str(path)], env)
    try:
        await again.expect("Ctrl-D quits.")
        again.type("\x1b[A")
        await again.expect("/help")
        again.type("\n")
        await again.expect("/status")
    finally:
        again.close()


async def test_ctrl_c_ends_the_session_quietly(terminal):
    terminal.type("/sta")
    await terminal.expect("/sta")
    terminal.type("\x03")
    assert await terminal.exit_status() == 0
    assert "Traceback" not in terminal.output and "KeyboardInterrupt" not in terminal.output


def _take_terminal_deaf_to_ctrl_c() -> None:
    """A child started as `nohup` or a script's background job starts it: SIGINT ignored, and
    here blocked too (both survive exec)."""
    _take_terminal()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


async def test_ctrl_c_ends_a_session_started_with_sigint_ignored_and_blocked(node_and_config):
    _, path = node_and_config
    env = {**os.environ, "TERM": "xterm", "CLAWOPS_TELEGRAM_TOKEN": ""}
    argv = [*CLAWOPS, "chat", "--config", str(path)]
    term = Terminal(argv, env, preexec=_take_terminal_deaf_to_ctrl_c)
    try:
        await term.expect("> ")
        term.type("\x03")
        assert await term.exit_status() == 0
    finally:
        term.close()


async def test_the_input_thread_leaves_ctrl_c_to_the_main_thread():
    # A process-directed SIGINT (Ctrl-C) then always interrupts the main thread's wait in the
    # event loop; handed to the input thread, it went unseen until the loop's next event.
    mask = await in_thread(signal.pthread_sigmask, signal.SIG_BLOCK, set())
    assert signal.SIGINT in mask
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


async def test_the_client_says_so_and_exits_1_when_the_node_goes_away(node_and_config, terminal):
    node, _ = node_and_config
    # The client's long poll of the sent log is answered at stop: it does not hold the node's
    # shutdown for the poll's 25 s (the bound is far above a normal stop).
    await asyncio.wait_for(node.stop(), 10)
    await terminal.expect("(the local Bot API stopped answering")
    assert await terminal.exit_status() == 1
    assert "Traceback" not in terminal.output
