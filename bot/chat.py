"""``clawops chat``: talk to the running bot from a terminal, through the local Bot API.

Type a command and see the bot's answer; buttons are listed with numbers, and typing a number
presses that button of the last message that had buttons. ``-c "/status"`` sends one message,
prints the answer and exits (for scripts). Works when the node runs without a Telegram token,
which is what ``scripts/run`` does by default. The node writes the server's URL and its control
secret to ``<data_dir>/local-bot-api.json`` (0600); reading that file is what allows a process to
speak as the local operator.

How it stays live:

1. A background task long-polls the server's sent log (``GET /control/sent?after=SEQ``) and
   prints each message, edit or document for this chat the moment the server has it: alerts
   and edits show up while the prompt waits for input, above the line being typed.
2. Input is read in a thread (``input`` with readline: line editing, and history kept in
   ``<data_dir>/chat_history``, mode 0600), so the event loop keeps printing meanwhile.
3. After a line is sent, the next prompt waits for the first item of the answer (an event from
   the poller, not a sleep); what follows (edits, more parts) is printed when it comes.

``-c`` cannot know when an answer is complete (the bot sends no "done"), so it prints items as
they come and ends after ``QUIET`` seconds without another one; so does a session whose lines
come from a pipe, at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bot.commands import number
from core.secrets import write_private

QUIET = 0.6  # -c: seconds without a new item after the answer began: the answer is complete
REPLY_WAIT = 30.0  # seconds the prompt waits for the first item of an answer
POLL = 25.0  # seconds one long poll of the sent log may wait (the server allows 60)
PROMPT = "> "
HISTORY_LENGTH = 1000
CHAT_HISTORY = "chat_history"  # in the node's data dir, beside local-bot-api.json
T = TypeVar("T")


def render(item: dict[str, Any]) -> str:
    text = html.unescape(re.sub(r"<[^>]+>", "", item.get("text") or ""))
    prefix = {"edit": "(edited) ", "answer": "(notice) ", "document": "(file) "}.get(
        item["kind"], ""
    )
    lines = [prefix + text if text else prefix.strip()]
    if item["kind"] == "document":
        lines.append(f"  [{item.get('filename')}, {item.get('size')} bytes]")
        lines.append("  " + "\n  ".join(str(item.get("content", "")).splitlines()[:40]))
    buttons = [b for row in item.get("buttons") or [] for b in row]
    if buttons:
        lines.append("  " + "   ".join(f"[{i}] {b['text']}" for i, b in enumerate(buttons, 1)))
    return "\n".join(line for line in lines if line)


class Chat:
    """One user in one chat of the local Bot API: send, press, and follow what the bot sends."""

    def __init__(
        self, client: httpx.AsyncClient, user_id: int, chat_id: int, username: str, last: int
    ) -> None:
        self.client = client
        self.user_id, self.chat_id, self.username = user_id, chat_id, username
        self.last = last  # the server's sequence number read up to (any chat)
        self.seen = last  # the newest item of this chat shown
        self.buttons: tuple[int, list[dict[str, Any]]] | None = None
        self.failure: str | None = None  # why following stopped
        # The newest item is the bot's working message ("⏳ …"): the answer is still coming.
        self.working = False
        self._changed = asyncio.Condition()
        self._follower: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, secret: str, user_id: int, chat_id: int, username: str) -> Chat:
        client = httpx.AsyncClient(
            base_url=url, timeout=POLL + 15, headers={"Authorization": f"Bearer {secret}"}
        )
        try:
            answer = await client.get("/control/sent")
            answer.raise_for_status()
        except BaseException:
            await client.aclose()
            raise
        return cls(client, user_id, chat_id, username, int(answer.json()["last"]))

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self.client.aclose()

    async def send(self, text: str) -> None:
        body = {
            "chat_id": self.chat_id,
            "user_id": self.user_id,
            "text": text,
            "username": self.username,
        }
        (await self.client.post("/control/message", json=body)).raise_for_status()

    async def press(self, choice: int) -> None:
        if self.buttons is None or not 1 <= choice <= len(self.buttons[1]):
            raise ValueError("no such button")
        message_id, buttons = self.buttons
        body = {
            "chat_id": self.chat_id,
            "user_id": self.user_id,
            "message_id": message_id,
            "data": buttons[choice - 1]["callback_data"],
        }
        (await self.client.post("/control/press", json=body)).raise_for_status()

    def follow(self, show: Callable[[str], None]) -> asyncio.Task[None]:
        """Start showing everything the bot sends or edits in this chat as it arrives."""
        self._follower = asyncio.create_task(self._follow(show), name="chat-follower")
        return self._follower

    async def _follow(self, show: Callable[[str], None]) -> None:
        try:
            while True:
                params = {"after": self.last, "timeout": POLL, "chat_id": self.chat_id}
                response = await self.client.get("/control/sent", params=params)
                response.raise_for_status()
                answer = response.json()
                for item in answer["items"]:
                    if item.get("buttons"):
                        self.buttons = (item["message_id"], [b for r in item["buttons"] for b in r])
                    show(render(item))
                if answer["items"]:
                    self.working = str(answer["items"][-1].get("text", "")).startswith("⏳")
                async with self._changed:
                    self.seen = max([self.seen, *(int(i["seq"]) for i in answer["items"])])
                    self.last = max(self.last, int(answer["last"]))
                    self._changed.notify_all()
        except httpx.HTTPError as exc:
            self.failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            async with self._changed:
                self._changed.notify_all()

    async def wait_past(self, mark: int, timeout: float) -> bool:
        """Whether an item newer than ``mark`` was shown within ``timeout`` seconds (False at
        once when following has stopped)."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for: it may swallow a cancel
                    await self._changed.wait_for(
                        lambda: self.seen > mark or self.failure is not None
                    )
        return self.seen > mark


async def in_thread(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a daemon thread: unlike ``asyncio.to_thread``, a thread still blocked
    in ``input`` does not hold up the exit (the default executor is joined at shutdown)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def work() -> None:
        # Ctrl-C must reach the main thread. A SIGINT the kernel hands to this thread instead
        # only trips Python's flag, and the main thread, asleep in the event loop's epoll (no
        # wakeup fd with asyncio.run's SIGINT handler), would not see it until its next event.
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            value, error = func(*args), None
        except BaseException as exc:  # handed to the awaiting task, which decides
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=work, name="chat-input", daemon=True).start()
    return await future


class Console:
    """The terminal: reads lines with readline (editing, history) when it is one, and prints
    what arrives above the line being typed, redrawing that line."""

    def __init__(self, history: Path | None) -> None:
        self.tty = sys.stdin.isatty() and sys.stdout.isatty()
        self.history = history if self.tty else None
        self.reading = False
        self._readline: Any = None
        self._termios: Any = None
        if self.tty:
            import readline  # line editing and history for input(); only on a terminal
            import termios

            self._readline = readline
            with contextlib.suppress(termios.error):
                self._termios = termios.tcgetattr(sys.stdin.fileno())
            readline.set_history_length(HISTORY_LENGTH)
            self._load_history()

    def show(self, text: str) -> None:
        if self.reading and self._readline is not None:
            typed = self._readline.get_line_buffer()
            sys.stdout.write(f"\r\x1b[2K{text}\n{PROMPT}{typed}")
        else:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()

    async def read(self) -> str:
        self.reading = True
        try:
            return await in_thread(input, PROMPT)
        finally:
            self.reading = False

    def close(self) -> None:
        """Save the history; give the terminal back as it was (a read may still be pending)."""
        self._save_history()
        if self._termios is not None:
            import termios

            with contextlib.suppress(termios.error):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._termios)

    def _load_history(self) -> None:
        if self.history is None:
            return
        try:
            lines = self.history.read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        for line in lines[-HISTORY_LENGTH:]:
            self._readline.add_history(line)

    def _save_history(self) -> None:
        if self.history is None or self._readline is None:
            return
        readline = self._readline
        count = readline.get_current_history_length()
        items = [readline.get_history_item(i) for i in range(1, count + 1)]
        text = "".join(f"{line}\n" for line in items[-HISTORY_LENGTH:] if line)
        try:
            write_private(self.history, text.encode())
        except OSError as exc:
            print(f"(history not saved: {exc})", file=sys.stderr)


async def converse(chat: Chat, console: Console) -> int:
    """The interactive session: 0 at Ctrl-D or Ctrl-C, 1 when the local Bot API goes away."""
    follower = chat.follow(console.show)
    while True:
        reading = asyncio.ensure_future(console.read())
        await asyncio.wait({reading, follower}, return_when=asyncio.FIRST_COMPLETED)
        if not reading.done():
            reading.cancel()
            console.show(f"(the local Bot API stopped answering: {chat.failure}; is the node up?)")
            return 1
        try:
            line = reading.result().strip()
        except (EOFError, KeyboardInterrupt):
            if not console.tty:  # lines from a script: let the last answer finish first
                while await chat.wait_past(chat.seen, REPLY_WAIT if chat.working else QUIET):
                    pass
            console.show("")
            return 0
        if not line:
            continue
        mark = chat.seen
        try:
            choice = number(line)
            await (chat.press(choice) if choice is not None else chat.send(line))
        except ValueError as exc:
            console.show(str(exc))
            continue
        except httpx.HTTPError as exc:
            console.show(f"(the local Bot API did not take it: {exc})")
            continue
        if not await chat.wait_past(mark, REPLY_WAIT) and chat.failure is None:
            console.show(f"(no answer in {REPLY_WAIT:.0f} s)")


async def ask_once(chat: Chat, text: str) -> int:
    """Send one message, print the answer as it comes, return when it has gone quiet."""
    chat.follow(lambda line: print(line, flush=True))
    mark = chat.seen
    await chat.send(text)
    if not await chat.wait_past(mark, REPLY_WAIT):
        reason = chat.failure or f"no answer in {REPLY_WAIT:.0f} s"
        print(f"clawops chat: {reason}", file=sys.stderr)
        return 1
    # A working message is not the answer: its edit with the reply is.
    while await chat.wait_past(chat.seen, REPLY_WAIT if chat.working else QUIET):
        pass
    return 0


async def _main(
    url: str,
    secret: str,
    user_id: int,
    chat_id: int,
    username: str,
    once: str | None,
    history: Path | None,
) -> int:
    try:
        chat = await Chat.open(url, secret, user_id, chat_id, username)
    except httpx.HTTPStatusError as exc:
        answer = f"{exc.response.status_code}: {exc.response.text.strip()[:200]}"
        print(f"clawops chat: the local Bot API at {url} refused us ({answer})", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(
            f"clawops chat: no local Bot API at {url} ({exc}). Is `clawops run` running "
            "without a Telegram token?",
            file=sys.stderr,
        )
        return 1
    try:
        if once is not None:
            return await ask_once(chat, once)
        console = Console(history)
        print(
            f"Chatting with the bot at {url} as user {user_id}. /help lists commands; a number "
            "presses a button; Ctrl-D quits.",
            flush=True,
        )
        try:
            return await converse(chat, console)
        finally:
            console.close()
    finally:
        await chat.close()


def _ctrl_c_ends() -> None:
    """An interactive session ends on Ctrl-C, even one started with SIGINT ignored or blocked
    (both are inherited across exec: `nohup`, a background job of a script, some CI runners);
    then Python installs no handler, asyncio.run none either, and Ctrl-C would do nothing."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_chat(
    url: str,
    secret: str,
    user_id: int,
    chat_id: int,
    username: str,
    once: str | None,
    history: Path | None = None,
) -> int:
    if once is None and sys.stdin.isatty():
        _ctrl_c_ends()
    try:
        code = asyncio.run(_main(url, secret, user_id, chat_id, username, once, history))
    except KeyboardInterrupt:
        print()
        code = 0
    if once is None and sys.stdin.isatty():
        # A thread may still be inside readline's input() (Ctrl-C, or the node went away):
        # nothing can wake it, and the interpreter's shutdown must not wait on or race with it.
        # The history is saved and the terminal restored by now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
