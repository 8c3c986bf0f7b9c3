"""The Telegram side of the node: python-telegram-bot 22 driven by hand in the node's loop.

Every update first passes ``_gate`` (handler group -1), which stops anything from a chat or user
outside the allowlist before any other handler sees it — callback queries included, which
``filters.Chat`` on command handlers would not cover. Commands then go through ``_run_command``:
role check, confirmation for mutating commands, the handler, the reply, the audit row.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from telegram import (
    BotCommand,
    BotCommandScopeChat,
    BotCommandScopeDefault,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import Conflict, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.commands import ROLE_RANK, Command, Context, Invocation, Registry, Reply, Role, UsageError
from bot.format import MAX_PARTS, esc, plain, split_html
from core.errors import ClawopsError, DatabaseUnavailable, StorageError
from core.tables import utcnow

if TYPE_CHECKING:
    from bot.node import Node

log = logging.getLogger("clawops.bot")
CONFIRM_PREFIX = "cf:"


@dataclass
class Pending:
    """A mutating command waiting for its admin to press Confirm."""

    command: Command
    inv: Invocation
    expires: datetime
    message_id: int = 0


class TelegramBot:
    def __init__(
        self,
        node: Node,
        registry: Registry,
        token: str,
        base_url: str,
        *,
        extra_admins: tuple[int, ...] = (),
    ) -> None:
        self.node = node
        self.registry = registry
        self.settings = node.config.telegram
        self.admins = set(self.settings.admins) | set(extra_admins)
        self.viewers = set(self.settings.viewers)
        self.allowed_chats = set(self.settings.allowed_chats)
        self.pending: dict[str, Pending] = {}
        self.polling = False
        # Called (from the polling loop, not awaited) when Telegram answers 409 Conflict: another
        # process polls with this token. The failover watchdog sets it.
        self.on_conflict: Callable[[], None] | None = None
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(token)
            .base_url(base_url)
            .base_file_url(base_url.replace("/bot", "/file/bot", 1))
            .rate_limiter(AIORateLimiter(max_retries=3))
            .build()
        )
        self.app.add_handler(TypeHandler(Update, self._gate), group=-1)
        for command in registry.commands.values():
            self.app.add_handler(CommandHandler(command.name, self._on_command))
        self.app.add_handler(CallbackQueryHandler(self._on_button, pattern=f"^{CONFIRM_PREFIX}"))
        self.app.add_handler(MessageHandler(filters.COMMAND, self._on_unknown))
        self.app.add_error_handler(self._on_error)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, poll: bool) -> None:
        await self.app.initialize()
        await self._register_commands()
        await self.app.start()
        if poll:
            await self.start_polling()

    async def start_polling(self) -> None:
        if self.polling or self.app.updater is None:
            return
        await self.app.updater.start_polling(
            poll_interval=0.0,
            timeout=10,
            drop_pending_updates=False,
            error_callback=self._on_polling_error,
        )
        self.polling = True
        log.info("telegram: polling started")

    def _on_polling_error(self, exc: TelegramError) -> None:
        """PTB 22 reports getUpdates errors here (not to the error handlers), then retries."""
        if isinstance(exc, Conflict):
            log.error("telegram: 409 Conflict: another process polls with this token (%s)", exc)
            if self.on_conflict is not None:
                self.on_conflict()
            return
        log.warning("telegram: polling: %s", exc)

    async def stop_polling(self) -> None:
        if not self.polling or self.app.updater is None:
            return
        await self.app.updater.stop()
        self.polling = False
        log.info("telegram: polling stopped")

    async def stop(self) -> None:
        await self.stop_polling()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    async def _register_commands(self) -> None:
        """setMyCommands per scope: viewers' list by default, the full list for admins."""
        viewer = [BotCommand(c.name, c.help[:256]) for c in self.registry.for_role("viewer")]
        admin = [BotCommand(c.name, c.help[:256]) for c in self.registry.for_role("admin")]
        try:
            await self.app.bot.set_my_commands(viewer, scope=BotCommandScopeDefault())
            for chat_id in sorted(self.admins):
                await self.app.bot.set_my_commands(admin, scope=BotCommandScopeChat(chat_id))
        except TelegramError as exc:
            log.warning("telegram: setMyCommands failed: %s", exc)

    # -- access ------------------------------------------------------------------------------

    def role_of(self, user_id: int, chat_id: int, chat_type: str) -> Role | None:
        """The user's role in this chat, or None: not allowed here (ignored, no reply)."""
        role: Role | None = (
            "admin" if user_id in self.admins else "viewer" if user_id in self.viewers else None
        )
        if chat_type == "private":
            return role if chat_id == user_id else None
        return role if chat_id in self.allowed_chats else None

    async def _gate(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user, chat = update.effective_user, update.effective_chat
        if user is not None and chat is not None and self.role_of(user.id, chat.id, chat.type):
            return
        text = update.effective_message.text if update.effective_message else None
        await self.node.audit.record(
            command=(text or "").split(" ", 1)[0][:64] or "(update)",
            outcome="ignored",
            user_id=user.id if user else None,
            username=user.username if user else None,
            chat_id=chat.id if chat else None,
            detail="chat or user not in the allowlist",
        )
        raise ApplicationHandlerStop

    # -- commands ----------------------------------------------------------------------------

    async def _on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user, chat = update.effective_message, update.effective_user, update.effective_chat
        if message is None or user is None or chat is None or not message.text:
            return
        name = message.text.split()[0][1:].split("@", 1)[0].lower()
        command = self.registry.get(name)
        role = self.role_of(user.id, chat.id, chat.type)
        if command is None or role is None:
            return
        inv = Invocation(
            command=name,
            args=tuple(context.args or ()),
            user_id=user.id,
            username=user.username,
            chat_id=chat.id,
            chat_type=chat.type,
            role=role,
        )
        mutating = command.mutates_with(inv.args)
        needed = "admin" if mutating else command.role
        if ROLE_RANK[role] < ROLE_RANK[needed]:
            what = f"/{name} {inv.args_text}".strip()
            await self._send(chat.id, Reply(f"⛔ {esc(what)} is for admins."))
            await self._audit(inv, "denied", 0, "needs the admin role")
            return
        if command.private_only and chat.type != "private":
            await self._send(chat.id, Reply(f"🔒 /{name} works in a private chat with me only."))
            await self._audit(inv, "denied", 0, "private chat only")
            return
        if mutating:
            # Bad arguments are refused now: a confirmation is only asked for what can run.
            if command.check is None or await self._check(command, inv):
                await self._ask_confirmation(command, inv)
            return
        await self._execute(command, inv)

    @staticmethod
    def _refusal(command: Command, exc: UsageError | ClawopsError) -> Reply:
        if isinstance(exc, UsageError):
            usage = f"\nUsage: <code>/{command.name} {esc(command.usage)}</code>"
            return Reply(f"⚠️ {esc(exc)}{usage if command.usage else ''}")
        if isinstance(exc, StorageError):  # not the command's fault: say so, and try again later
            return Reply(f"⚠️ {esc(exc)}")
        return Reply(f"❌ {esc(exc)}")

    async def _check(self, command: Command, inv: Invocation) -> bool:
        assert command.check is not None
        try:
            await command.check(Context(inv, self.node))
        except (UsageError, ClawopsError) as exc:
            await self._send(inv.chat_id, self._refusal(command, exc))
            await self._audit(inv, "error", 0, str(exc))
            return False
        except Exception as exc:  # a bug must still answer; the traceback goes to the log
            log.exception("/%s: checking its arguments failed", command.name)
            name = esc(type(exc).__name__)
            await self._send(
                inv.chat_id, Reply(f"❌ /{command.name} failed: internal error ({name}).")
            )
            await self._audit(inv, "error", 0, f"{type(exc).__name__}: {exc}")
            return False
        return True

    async def _execute(self, command: Command, inv: Invocation, edit: int | None = None) -> None:
        started = time.perf_counter()
        outcome, detail, unavailable = "ok", "", False
        try:
            reply = await command.handler(Context(inv, self.node))
        except (UsageError, ClawopsError) as exc:
            outcome, detail = "error", str(exc)
            unavailable = isinstance(exc, DatabaseUnavailable)
            reply = self._refusal(command, exc)
        except Exception as exc:  # a bug must still answer; the traceback goes to the log
            log.exception("/%s failed", command.name)
            outcome, detail = "error", f"{type(exc).__name__}: {exc}"
            reply = Reply(f"❌ /{command.name} failed: internal error ({esc(type(exc).__name__)}).")
        duration = int((time.perf_counter() - started) * 1000)
        await self._send(inv.chat_id, reply, edit=edit)
        if unavailable:
            # Updates are handled one at a time: waiting out another database timeout for the
            # audit row would only hold up the next command.
            log.warning("audit of /%s not recorded: %s", inv.command, detail)
            return
        await self._audit(inv, outcome, duration, detail)

    async def _ask_confirmation(self, command: Command, inv: Invocation) -> None:
        what = await command.describe(Context(inv, self.node)) if command.describe else ""
        token = secrets.token_urlsafe(9)
        timeout: timedelta = self.settings.confirm_timeout
        self.pending[token] = Pending(command, inv, utcnow() + timeout)
        keyboard = InlineKeyboardMarkup(
            [[
                InlineKeyboardButton("✅ Confirm", callback_data=f"{CONFIRM_PREFIX}{token}:yes"),
                InlineKeyboardButton("✖️ Cancel", callback_data=f"{CONFIRM_PREFIX}{token}:no"),
            ]]
        )  # fmt: skip
        text = (
            f"Run <code>/{command.name} {esc(inv.args_text)}</code>?\n"
            + (f"{what}\n" if what else "")
            + f"Only {esc(inv.username or inv.user_id)} can confirm, within "
            f"{int(timeout.total_seconds())} s."
        )
        sent = await self.app.bot.send_message(
            inv.chat_id, text, parse_mode=ParseMode.HTML, reply_markup=keyboard
        )
        self.pending[token].message_id = sent.message_id
        await self._audit(inv, "confirming", 0, "")
        asyncio.get_running_loop().call_later(
            timeout.total_seconds(), lambda: self.app.create_task(self._expire(token))
        )

    async def _expire(self, token: str) -> None:
        """A confirmation nobody pressed in time: say so on its message, drop its buttons."""
        pending = self.pending.pop(token, None)
        if pending is None:
            return
        await self._send(
            pending.inv.chat_id, Reply("⌛ Expired; nothing was run."), edit=pending.message_id
        )
        await self._audit(pending.inv, "expired", 0, "")

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query, user = update.callback_query, update.effective_user
        if query is None or user is None or query.data is None:
            return
        token, _, answer = query.data.removeprefix(CONFIRM_PREFIX).partition(":")
        pending = self.pending.get(token)
        message_id = query.message.message_id if query.message else None
        if pending is None:
            await query.answer("This confirmation is no longer valid.")
            return
        if user.id != pending.inv.user_id:
            await query.answer("Only the admin who asked can confirm this.", show_alert=True)
            await self.node.audit.record(
                command=pending.command.name,
                outcome="denied",
                user_id=user.id,
                username=user.username,
                chat_id=pending.inv.chat_id,
                args=pending.inv.args_text,
                detail="pressed another admin's confirmation",
            )
            return
        del self.pending[token]
        if utcnow() > pending.expires:
            await query.answer("Expired.")
            await self._send(pending.inv.chat_id, Reply("⌛ Expired; nothing was run."),
                             edit=message_id)  # fmt: skip
            await self._audit(pending.inv, "expired", 0, "")
            return
        if answer != "yes":
            await query.answer("Cancelled.")
            await self._send(pending.inv.chat_id, Reply("Cancelled; nothing was run."),
                             edit=message_id)  # fmt: skip
            await self._audit(pending.inv, "cancelled", 0, "")
            return
        await query.answer("Running…")
        await self._execute(pending.command, pending.inv, edit=message_id)

    async def _on_unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or message.text is None:
            return
        name = message.text.split()[0][1:].split("@", 1)[0]
        await self._send(
            message.chat_id, Reply(f"Unknown command /{esc(name)}. /help lists what I can do.")
        )

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.warning("telegram: %s", context.error, exc_info=context.error)

    # -- output ------------------------------------------------------------------------------

    async def _send(self, chat_id: int, reply: Reply, edit: int | None = None) -> None:
        """Send (or edit into) a reply: split past 4096 chars, a document past a few parts."""
        parts = split_html(reply.text)
        document = reply.document
        if len(parts) > MAX_PARTS and document is None:
            document = ("reply.txt", plain(reply.text).encode())
            parts = [f"{parts[0].splitlines()[0]}\n(full text attached)"]
        for i, part in enumerate(parts):
            if i == 0 and edit is not None:
                await self.app.bot.edit_message_text(
                    part, chat_id=chat_id, message_id=edit, parse_mode=ParseMode.HTML
                )
            else:
                await self.app.bot.send_message(chat_id, part, parse_mode=ParseMode.HTML)
        if document is not None:
            await self.app.bot.send_document(chat_id, document[1], filename=document[0])

    async def _audit(self, inv: Invocation, outcome: Any, duration_ms: int, detail: str) -> None:
        """Record the audit row; a database that fails it is logged, the reply is already out."""
        try:
            await self._record_audit(inv, outcome, duration_ms, detail)
        except StorageError as exc:
            log.warning("audit of /%s (%s) not recorded: %s", inv.command, outcome, exc)

    async def _record_audit(
        self, inv: Invocation, outcome: Any, duration_ms: int, detail: str
    ) -> None:
        await self.node.audit.record(
            command=inv.command,
            outcome=outcome,
            user_id=inv.user_id,
            username=inv.username,
            chat_id=inv.chat_id,
            args=inv.args_text,
            duration_ms=duration_ms,
            detail=detail,
        )

    async def send_alert(self, chat_id: int, text: str) -> None:
        """One alert message; Telegram errors propagate so the notifier can retry."""
        await self.app.bot.send_message(chat_id, text, parse_mode=ParseMode.HTML)
