"""How a running command shows in its chat: its turn in the chat's order, "typing…", and one
progress message that the final reply replaces.

Order. The bot handles updates concurrently (a 20 s ``/run`` must not hold up anyone's /help or
a button press), yet one chat's replies must come in the order of its commands. Each command
takes a ``Turn`` in its chat when its update arrives (PTB hands the bot updates one at a time, in
order, and taking a turn does not wait); it starts once the previous turn of that chat ended, and
ends its own as soon as its first message is in the chat: its reply, or its working message (the
final reply then edits that message, in place). A command still running after ``progress_after``
has a working message, so it holds its chat for about that long at most. Button presses take no
turn: they act on a message that is already in the chat, and a confirmed command edits its
confirmation message.

Progress. Nothing shows for a command that answers within ``progress_after``. After that the chat
gets "typing…" (sent again every TYPING_EVERY seconds: Telegram shows it for 5 s) and one working
message: the latest progress the command reported (``ctx.progress``), else "⏳ /cmd is
running…". Later reports edit it, at most once per EDIT_INTERVAL (GROUP_EDIT_INTERVAL in a group,
which takes 20 messages a minute), the latest text shown in the end unless the reply came first.
Progress is best effort: a Telegram error there is logged, and the command goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, TelegramError
from telegram.ext import AIORateLimiter

from bot.commands import Reply
from bot.format import MAX_PARTS, esc, plain, split_html

log = logging.getLogger("clawops.bot")
TYPING_EVERY = 4.0
EDIT_INTERVAL = 1.0
GROUP_EDIT_INTERVAL = 3.0


@dataclass
class Turn:
    """One command's place in its chat: ``wait`` for the earlier ones, ``end`` to let the next
    one go (idempotent)."""

    previous: asyncio.Future[None] | None
    mine: asyncio.Future[None]

    async def wait(self) -> None:
        if self.previous is not None and not self.previous.done():
            await asyncio.wait({self.previous})  # a cancelled waiter leaves the future alone

    def end(self) -> None:
        if not self.mine.done():
            self.mine.set_result(None)


class ChatOrder:
    """The turns of every chat, in the order its updates arrived."""

    def __init__(self) -> None:
        self._last: dict[int, asyncio.Future[None]] = {}

    def take(self, chat_id: int) -> Turn:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        turn = Turn(self._last.get(chat_id), mine)
        self._last[chat_id] = mine
        mine.add_done_callback(lambda done: self._forget(chat_id, done))
        return turn

    def _forget(self, chat_id: int, done: asyncio.Future[None]) -> None:
        if self._last.get(chat_id) is done:
            del self._last[chat_id]

    def __len__(self) -> int:
        """Chats with a command still before its first answer."""
        return len(self._last)


async def send_reply(bot: Bot, chat_id: int, reply: Reply, edit: int | None = None) -> None:
    """Send (or edit into) a reply: split past 4096 chars, a document past a few parts. When the
    message cannot be edited (someone deleted it), the reply goes out as a new message."""
    parts = split_html(reply.text)
    document = reply.document
    links = (
        InlineKeyboardMarkup([[InlineKeyboardButton(label, url=url)] for label, url in reply.links])
        if reply.links
        else None
    )
    if len(parts) > MAX_PARTS and document is None:
        document = ("reply.txt", plain(reply.text).encode())
        parts = [f"{parts[0].splitlines()[0]}\n(full text attached)"]
    for i, part in enumerate(parts):
        markup = links if i == 0 else None  # the link buttons go under the first part
        if i == 0 and edit is not None:
            try:
                await bot.edit_message_text(
                    part,
                    chat_id=chat_id,
                    message_id=edit,
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup,
                )
                continue
            except BadRequest as exc:
                log.warning("telegram: cannot edit message %s (%s); sending the reply", edit, exc)
        try:
            await bot.send_message(chat_id, part, parse_mode=ParseMode.HTML, reply_markup=markup)
        except BadRequest as exc:
            if markup is None:
                raise
            # Telegram refuses a button's URL (BUTTON_URL_INVALID: a loopback public_url, say):
            # the reply still goes out, the links as text under it.
            log.warning("telegram: link buttons refused (%s); sending them as text", exc)
            text = "\n".join(f"{esc(label)}: {esc(url)}" for label, url in reply.links)
            await bot.send_message(chat_id, f"{part}\n{text}", parse_mode=ParseMode.HTML)
    if document is not None:
        await bot.send_document(chat_id, document[1], filename=document[0])


class RateLimiter(AIORateLimiter):
    """PTB's limiter (30 messages a second, 20 a minute per group, RetryAfter retried), except
    for chat actions: "typing…" is no message, and counting it among a group's 20 a minute would
    delay the replies themselves."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        if endpoint == "sendChatAction":
            return await callback(*args, **kwargs)
        return await super().process_request(
            callback, args, kwargs, endpoint, data, rate_limit_args
        )


class Working:
    """One command's run in its chat (see the module docstring): ``progress`` while it runs,
    ``finish`` with its reply. ``message_id`` is the message the reply edits, if any; ``title``
    the working message's text until the command reports progress."""

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        after: float,
        turn: Turn | None = None,
        message_id: int | None = None,
        title: str = "",
    ) -> None:
        self.bot, self.chat_id, self.after, self.turn = bot, chat_id, after, turn
        self.message_id = message_id
        self.title = title  # what the working message says before any progress
        self.interval = GROUP_EDIT_INTERVAL if chat_id < 0 else EDIT_INTERVAL
        self._latest = ""
        self._shown = ""
        self._edited_at = -float("inf")
        self._due = False
        self._lock = asyncio.Lock()
        self._flush: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Working:
        self._watch = asyncio.create_task(self._watcher(), name=f"working:{self.chat_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        """The command's work is over (``finish`` sends its reply). Under the lock: a working
        message being sent is sent and known first, so the reply edits it (cancelled mid-send,
        its id would be lost and the reply go out beside it)."""
        async with self._lock:
            await self._stop_timers()

    async def _stop_timers(self) -> None:
        for task in (self._watch, self._flush):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _end_turn(self) -> None:
        if self.turn is not None:
            self.turn.end()

    async def show(self, html: str) -> None:
        """Show ``html`` on the working message now (a confirmed command's "⏳ Running …")."""
        self._latest = html
        async with self._lock:
            await self._put(html)

    async def progress(self, html: str) -> None:
        """What ``ctx.progress`` does: remember the latest text, show it once due, throttled."""
        self._latest = f"⏳ {html}"
        if self._due:
            await self._show_latest()

    async def finish(self, reply: Reply) -> None:
        """The final reply: edits the working message if there is one, else is sent; the chat's
        next command may then go. It is not held back by the edit interval: it is the last edit,
        and the rate limiter keeps a group's pace."""
        async with self._lock:  # a progress message being sent is sent (and known) first
            await self._stop_timers()
            await send_reply(self.bot, self.chat_id, reply, edit=self.message_id)
        self._end_turn()

    async def _watcher(self) -> None:
        await asyncio.sleep(self.after)
        self._due = True
        self._latest = self._latest or self.title
        while True:
            if self._latest:
                await self._show_latest()
            try:
                await self.bot.send_chat_action(self.chat_id, ChatAction.TYPING)
            except TelegramError as exc:
                log.info("telegram: typing in %s: %s", self.chat_id, exc)
            await asyncio.sleep(TYPING_EVERY)

    async def _show_latest(self) -> None:
        async with self._lock:
            if self._latest == self._shown:
                return
            wait = self._edited_at + self.interval - time.monotonic()
            if wait <= 0:
                await self._put(self._latest)
            elif self._flush is None or self._flush.done() or self._flush is asyncio.current_task():
                # (the flush itself, woken a clock tick early, schedules the next one)
                self._flush = asyncio.create_task(self._later(wait))

    async def _later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        await self._show_latest()

    async def _put(self, html: str) -> None:
        """Send or edit the working message (the caller holds the lock)."""
        self._shown, self._edited_at = html, time.monotonic()
        try:
            if self.message_id is None:
                sent = await self.bot.send_message(self.chat_id, html, parse_mode=ParseMode.HTML)
                self.message_id = sent.message_id
                self._end_turn()
            else:
                await self.bot.edit_message_text(
                    html,
                    chat_id=self.chat_id,
                    message_id=self.message_id,
                    parse_mode=ParseMode.HTML,
                )
        except TelegramError as exc:
            log.warning("telegram: progress in %s: %s", self.chat_id, exc)
