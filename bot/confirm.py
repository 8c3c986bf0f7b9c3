"""Confirmation of mutating commands: Confirm / Cancel buttons under the question, pressable only
by the admin who asked, expiring after ``telegram.confirm_timeout``. A confirmed command runs on
its question's message: "⏳ Running …" at once (its buttons gone), then progress, then the reply.

A command whose ``confirm_again`` has a second question for its arguments (``/claw delete NAME
--force``) asks it after the first Confirm, on the same message, with its own Confirm / Cancel
(the same admin only, a fresh expiry); only its Confirm runs the command.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode

from bot.commands import Command, Context, Invocation, Reply
from bot.format import esc
from bot.working import Working
from core.tables import utcnow

if TYPE_CHECKING:
    from bot.telegram import TelegramBot

CONFIRM_PREFIX = "cf:"
EXPIRED = Reply("⌛ Expired; nothing was run.")


@dataclass
class Pending:
    """A mutating command waiting for its admin to press Confirm."""

    command: Command
    inv: Invocation
    expires: datetime
    message_id: int = 0
    second: bool = False  # this is the second question (its Confirm runs the command)


class Confirmations:
    def __init__(self, tg: TelegramBot) -> None:
        self.tg = tg
        self.pending: dict[str, Pending] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def close(self) -> None:
        """At stop: no expiry fires into a stopped bot (the questions just stay unanswered)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def ask(self, command: Command, inv: Invocation) -> None:
        tg = self.tg
        # What will happen, named before the question (e.g. /kill's pids and command lines).
        what = await command.describe(Context(inv, tg.node)) if command.describe else ""
        text = f"Run <code>/{command.name} {esc(inv.args_text)}</code>?\n" + (
            f"{what}\n" if what else ""
        )
        await self._question(command, inv, text, None, second=False)
        await tg.audit(inv, "confirming", 0, "")

    async def _question(
        self, command: Command, inv: Invocation, text: str, edit: int | None, *, second: bool
    ) -> None:
        """Send (or edit ``edit`` into) a question with its Confirm / Cancel and expiry."""
        tg = self.tg
        token = secrets.token_urlsafe(9)
        timeout = tg.settings.confirm_timeout
        pending = Pending(command, inv, utcnow() + timeout, second=second)
        self.pending[token] = pending
        yes = InlineKeyboardButton("✅ Confirm", callback_data=f"{CONFIRM_PREFIX}{token}:yes")
        no = InlineKeyboardButton("✖️ Cancel", callback_data=f"{CONFIRM_PREFIX}{token}:no")
        text += (
            f"Only {esc(inv.username or inv.user_id)} can confirm, within "
            f"{int(timeout.total_seconds())} s."
        )
        markup = InlineKeyboardMarkup([[yes, no]])
        if edit is None:
            sent = await tg.app.bot.send_message(
                inv.chat_id, text, parse_mode=ParseMode.HTML, reply_markup=markup
            )
            pending.message_id = sent.message_id
        else:
            await tg.app.bot.edit_message_text(
                text,
                chat_id=inv.chat_id,
                message_id=edit,
                parse_mode=ParseMode.HTML,
                reply_markup=markup,
            )
            pending.message_id = edit
        self._timers[token] = asyncio.get_running_loop().call_later(
            timeout.total_seconds(), lambda: tg.spawn(self._expire(token), "confirmation expiry")
        )

    async def _expire(self, token: str) -> None:
        """A confirmation nobody pressed in time: say so on its message, drop its buttons."""
        self._timers.pop(token, None)
        pending = self.pending.pop(token, None)
        if pending is None:
            return
        await self.tg.send(pending.inv.chat_id, EXPIRED, edit=pending.message_id)
        await self.tg.audit(pending.inv, "expired", 0, "")

    async def press(self, update: Update) -> None:
        tg, query, user = self.tg, update.callback_query, update.effective_user
        if query is None or user is None or query.data is None:
            return
        token, _, answer = query.data.removeprefix(CONFIRM_PREFIX).partition(":")
        pending = self.pending.get(token)
        message_id = query.message.message_id if query.message else None
        if pending is None:
            await query.answer("This confirmation is no longer valid.")
            return
        inv = pending.inv
        if user.id != inv.user_id:
            await query.answer("Only the admin who asked can confirm this.", show_alert=True)
            await tg.node.audit.record(
                command=pending.command.name,
                outcome="denied",
                user_id=user.id,
                username=user.username,
                chat_id=inv.chat_id,
                args=inv.args_text,
                detail="pressed another admin's confirmation",
            )
            return
        del self.pending[token]
        if timer := self._timers.pop(token, None):
            timer.cancel()
        if utcnow() > pending.expires:
            await query.answer("Expired.")
            await tg.send(inv.chat_id, EXPIRED, edit=message_id)
            await tg.audit(inv, "expired", 0, "")
            return
        if answer != "yes":
            await query.answer("Cancelled.")
            await tg.send(inv.chat_id, Reply("Cancelled; nothing was run."), edit=message_id)
            await tg.audit(inv, "cancelled", 0, "")
            return
        again = pending.command.confirm_again
        question = again(inv.args) if again is not None and not pending.second else None
        if question is not None:
            await query.answer("One more confirmation…")
            await self._question(pending.command, inv, f"{question}\n", message_id, second=True)
            await tg.audit(inv, "confirming", 0, "second confirmation")
            return
        await query.answer("Running…")
        working = Working(tg.app.bot, inv.chat_id, after=tg.progress_after, message_id=message_id)
        what = esc(f"/{pending.command.name} {inv.args_text}".strip())
        await working.show(f"⏳ Running <code>{what}</code>…")  # its buttons go at once
        await tg.execute(pending.command, inv, working)
