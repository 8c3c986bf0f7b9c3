"""Buttons on a down alert: Mute 1h (every key), Restart and Logs (a configured service's key),
Run again (the key of a job ``/run`` can run). Admins press them; a viewer is refused.

A button's callback data is ``al:<flip_id>:<action>``: the flip is a row in the shared database,
so a button still works after a restart and on the other node. A press:

1. is answered every time (Telegram shows a spinner until then) and audited (command "alert");
2. is refused, with nothing done, when the presser is not an admin, the data is malformed, the
   flip is unknown or not a "down" one, the button is not on the pressed message, or the key's
   service or job is no longer in the config;
3. Mute 1h mutes the flip's key for an hour; Logs runs ``/logs SERVICE MACHINE``; Restart and
   Run again ask the confirmation of ``/restart SERVICE MACHINE`` and ``/run JOB``: each as if
   the presser had typed it in the alert's chat (``TelegramBot.run_as_typed``: the same checks,
   confirmation, progress, reply and audit);
4. adds one line to the alert saying who did what. The lines are kept in the shared state
   (``alert_notes:<flip_id>``), appended with a conditional update, so presses of several
   admins, on either node, each keep their line; the alert is rebuilt from ``flip_text`` and
   those lines, with its buttons.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update, User
from telegram.constants import ParseMode
from telegram.error import TelegramError

from bot.commands import Invocation, number
from bot.format import esc
from bot.notify import flip_text
from core.alerts import Flip
from core.config import ServiceConfig
from core.errors import StorageError
from core.tables import utcnow

if TYPE_CHECKING:
    from bot.node import Node
    from bot.telegram import TelegramBot
    from core.audit import Outcome

log = logging.getLogger("clawops.bot")
ALERT_PREFIX = "al:"
MUTE_FOR = timedelta(hours=1)
MAX_NOTES = 20  # lines kept under one alert (Telegram takes 4096 characters a message)

Action = Literal["mute", "restart", "logs", "run"]
LABELS: dict[str, str] = {
    "mute": "🔕 Mute 1h",
    "restart": "🔄 Restart",
    "logs": "📜 Logs",
    "run": "▶️ Run again",
}
JOB_KEY_PREFIXES = ("job:", "run:")  # status-log entries, clawops job runs (jobs/runner.py)


def service_of(node: Node, key: str) -> ServiceConfig | None:
    """The configured service of a ``service:<machine>/<name>`` key, or None."""
    if not key.startswith("service:"):
        return None
    machine, _, name = key.removeprefix("service:").partition("/")
    found = [s for s in node.config.services if s.machine == machine and s.name == name]
    return found[0] if found else None


def job_of(node: Node, key: str) -> str | None:
    """The job ``/run`` can run for a ``job:<name>`` or ``run:<name>`` key, or None."""
    for prefix in JOB_KEY_PREFIXES:
        if key.startswith(prefix) and key.removeprefix(prefix) in node.jobs.specs:
            return key.removeprefix(prefix)
    return None


def actions_for(node: Node, key: str) -> list[Action]:
    actions: list[Action] = ["mute"]
    service = service_of(node, key)
    machine = node.config.machine(service.machine) if service is not None else None
    if machine is not None and machine.runs_commands:  # without SSH both would answer NoSSH
        actions += ["restart", "logs"]
    if job_of(node, key) is not None:
        actions.append("run")
    return actions


def alert_markup(node: Node, flip: Flip) -> InlineKeyboardMarkup | None:
    """The buttons of a message about ``flip``: a "down" one has them, a recovery none."""
    if flip.new_state != "down":
        return None
    buttons = [
        InlineKeyboardButton(LABELS[a], callback_data=f"{ALERT_PREFIX}{flip.id}:{a}")
        for a in actions_for(node, flip.key)
    ]
    return InlineKeyboardMarkup([buttons])


@dataclass(frozen=True)
class Press:
    """One press, as far as it is known: who, where, what (``action`` "" when malformed)."""

    user: User
    chat_id: int | None
    message: Message | None  # None: too old for Telegram to show it (not editable either)
    data: str
    flip_id: int | None
    action: str


class PressRefused(Exception):
    """A press that does nothing: the text answers the query, the detail goes to the audit."""

    def __init__(self, text: str, outcome: Outcome = "error") -> None:
        super().__init__(text)
        self.text = text
        self.outcome: Outcome = outcome


def parse(data: str) -> tuple[int | None, str]:
    """``al:<flip_id>:<action>`` as (flip id, action); (None, "") when malformed."""
    flip_id, _, action = data.removeprefix(ALERT_PREFIX).partition(":")
    number_ = number(flip_id)
    if number_ is None or action not in LABELS:
        return None, ""
    return number_, action


def who(user: User) -> str:
    return f"@{user.username}" if user.username else user.full_name or str(user.id)


class AlertButtons:
    def __init__(self, tg: TelegramBot) -> None:
        self.tg = tg
        # Notes and edits one at a time on this node (presses are rare): an alert's latest edit
        # has every line.
        self._editing = asyncio.Lock()

    def markup(self, flip: Flip) -> InlineKeyboardMarkup | None:
        return alert_markup(self.tg.node, flip)

    async def press(self, update: Update) -> None:
        query, user = update.callback_query, update.effective_user
        if query is None or user is None or query.data is None:
            return
        flip_id, action = parse(query.data)
        message = query.message if isinstance(query.message, Message) else None
        chat_id = update.effective_chat.id if update.effective_chat else None
        press = Press(user, chat_id, message, query.data, flip_id, action)
        try:
            text, detail = await self._act(update, press)
        except PressRefused as refused:
            await query.answer(refused.text, show_alert=refused.outcome == "denied")
            await self._audit(press, refused.outcome, refused.text)
            return
        except StorageError as exc:
            log.warning("alert button %s: %s", query.data, exc)
            await query.answer("The database did not answer; nothing was done. Try again.")
            await self._audit(press, "error", str(exc))
            return
        await query.answer(text)
        await self._audit(press, "ok", detail)

    async def _act(self, update: Update, press: Press) -> tuple[str, str]:
        """Do what the press asks: (the answer to the query, the audit detail), or PressRefused."""
        tg, node, chat = self.tg, self.tg.node, update.effective_chat
        if chat is None or tg.role_of(press.user.id, chat.id, chat.type) != "admin":
            raise PressRefused("Only admins can act on alerts.", "denied")
        if press.flip_id is None:
            raise PressRefused("This button is not valid.")
        flip = await node.alerts.flip(press.flip_id)
        if flip is None:
            raise PressRefused("This alert is no longer known.")
        if press.message is not None and not _on_message(press.message, press.data):
            raise PressRefused("This button is not on this message.")
        if flip.new_state != "down":
            raise PressRefused("This alert is about a recovery: nothing to act on.")
        if press.action == "mute":
            await node.alerts.mute(utcnow() + MUTE_FOR, key=flip.key, by=press.user.id)
            await self._note(flip, press, f"🔕 Muted for 1h by {esc(who(press.user))}")
            return "Muted for 1h.", flip.key
        kinds = ("service:",) if press.action in ("restart", "logs") else JOB_KEY_PREFIXES
        if not flip.key.startswith(kinds):
            raise PressRefused(f"This button does not apply to {flip.key}."[:200])
        if press.action in ("restart", "logs"):
            service = service_of(node, flip.key)
            if service is None:
                raise PressRefused(f"{flip.key} is no longer in the config."[:200])
            args: tuple[str, ...] = (service.name, service.machine)
        else:
            job = job_of(node, flip.key)
            if job is None:
                raise PressRefused(f"{flip.key} is no longer a job I can run."[:200])
            args = (job,)
        command = tg.registry.get(press.action)
        if command is None:  # restart, logs and run are built in; a trimmed registry lacks them
            raise PressRefused(f"/{press.action} is not available here.")
        tg.run_as_typed(command, self._invocation(press, chat.id, chat.type, args))
        line, answer = {
            "restart": ("🔄 Restart asked by", "Confirm the restart below."),
            "logs": ("📜 Logs shown to", "Logs coming below."),
            "run": ("▶️ Run asked by", "Confirm the run below."),
        }[press.action]
        await self._note(flip, press, f"{line} {esc(who(press.user))}")
        return answer, flip.key

    @staticmethod
    def _invocation(
        press: Press, chat_id: int, chat_type: str, args: tuple[str, ...]
    ) -> Invocation:
        return Invocation(
            command=press.action,
            args=args,
            user_id=press.user.id,
            username=press.user.username,
            chat_id=chat_id,
            chat_type=chat_type,
            role="admin",
        )

    async def _note(self, flip: Flip, press: Press, line: str) -> None:
        """Add ``line`` to the alert's notes (shared), then edit the alert to show them all."""
        async with self._editing:
            try:
                notes = await self._append(flip.id, line)
            except StorageError as exc:  # the action was done: show its line at least
                log.warning("alert %d: its notes are not recorded: %s", flip.id, exc)
                notes = [line]
            if press.message is None:
                return  # an alert too old to edit: the press is in the audit log
            text = flip_text(flip) + "\n" + "\n".join(notes)
            try:
                await self.tg.app.bot.edit_message_text(
                    text,
                    chat_id=press.message.chat_id,
                    message_id=press.message.message_id,
                    parse_mode=ParseMode.HTML,
                    reply_markup=self.markup(flip),
                )
            except TelegramError as exc:  # the action was done; only its line is missing
                log.warning("alert %d: cannot edit its message: %s", flip.id, exc)

    async def _append(self, flip_id: int, line: str) -> list[str]:
        key = f"alert_notes:{flip_id}"
        state = self.tg.node.state
        for _ in range(10):
            current = await state.read(key)
            notes = [str(n) for n in (current.value.get("lines", []) if current else [])]
            notes = [*notes, line][-MAX_NOTES:]
            if await state.claim(key, {"lines": notes}, current.version if current else None):
                return notes
        raise StorageError(f"could not note the press on alert {flip_id}: too much contention")

    async def _audit(self, press: Press, outcome: Outcome, detail: str) -> None:
        args = f"{press.action} {press.flip_id}" if press.action else press.data
        try:
            await self.tg.node.audit.record(
                command="alert",
                outcome=outcome,
                user_id=press.user.id,
                username=press.user.username,
                chat_id=press.chat_id,
                args=args,
                detail=detail,
            )
        except StorageError as exc:
            log.warning("audit of alert button %s (%s) not recorded: %s", args, outcome, exc)


def _on_message(message: Message, data: str) -> bool:
    """Whether ``data`` is a button of ``message`` (a forged press elsewhere changes nothing)."""
    markup = message.reply_markup
    if markup is None:
        return False
    return any(b.callback_data == data for row in markup.inline_keyboard for b in row)
