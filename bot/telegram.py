"""The Telegram side of the node: python-telegram-bot 22 driven by hand in the node's loop.

Every update first passes ``_gate`` (handler group -1), which stops anything from a chat or user
outside the allowlist before any other handler sees it — callback queries included, which
``filters.Chat`` on command handlers would not cover. Commands then go through ``_handle_command``:
role check, confirmation for mutating commands, the handler, the reply, the audit row.

PTB hands updates over one at a time (no ``concurrent_updates``): each handler here only takes
the command's turn in its chat (``bot.working``) and starts the work as a task, so a long command
never delays another command or a button press, and one chat's replies keep its commands' order.
With PTB's ``concurrent_updates`` (or ``block=False``) a turn would be taken inside a task, past
awaits in PTB's own dispatch, and the order would rest on scheduling details; here it is taken
in the handler PTB awaits in update order. Only new messages run commands: an edit is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from telegram import (
    BotCommand,
    BotCommandScopeChat,
    BotCommandScopeDefault,
    InlineKeyboardMarkup,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import Conflict, TelegramError
from telegram.ext import (
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

from bot.alert_buttons import ALERT_PREFIX, AlertButtons
from bot.commands import ROLE_RANK, Command, Context, Invocation, Registry, Reply, Role, UsageError
from bot.confirm import CONFIRM_PREFIX, Confirmations
from bot.format import esc
from bot.working import ChatOrder, RateLimiter, Turn, Working, send_reply
from core.config import TelegramConfig
from core.errors import ClawopsError, StorageError

if TYPE_CHECKING:
    from bot.node import Node

log = logging.getLogger("clawops.bot")
# At stop, commands still running get this long to answer before they are cancelled.
STOP_GRACE = 10.0
NEW_MESSAGE = filters.UpdateType.MESSAGE  # not an edited one: an edit never runs a command again


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
        self.extra_admins = extra_admins
        self.apply_settings(node.config.telegram)
        self.confirmations = Confirmations(self)
        self.alert_buttons = AlertButtons(self)
        self.order = ChatOrder()
        self.tasks: set[asyncio.Task[None]] = set()
        self.polling = False
        # Called (from the polling loop, not awaited) when Telegram answers 409 Conflict: another
        # process polls with this token. The failover watchdog sets it.
        self.on_conflict: Callable[[], None] | None = None
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(token)
            .base_url(base_url)
            .base_file_url(base_url.replace("/bot", "/file/bot", 1))
            .rate_limiter(RateLimiter(max_retries=3))
            .build()
        )
        self.app.add_handler(TypeHandler(Update, self._gate), group=-1)
        for command in registry.commands.values():
            self.app.add_handler(CommandHandler(command.name, self._on_command, NEW_MESSAGE))
        self.app.add_handler(CallbackQueryHandler(self._on_button, pattern=f"^{CONFIRM_PREFIX}"))
        self.app.add_handler(
            CallbackQueryHandler(self._on_alert_button, pattern=f"^{ALERT_PREFIX}")
        )
        self.app.add_handler(MessageHandler(filters.COMMAND & NEW_MESSAGE, self._on_unknown))
        private_text = filters.TEXT & ~filters.COMMAND & filters.ChatType.PRIVATE & NEW_MESSAGE
        self.app.add_handler(MessageHandler(private_text, self._on_text))
        self.app.add_error_handler(self._on_error)

    def apply_settings(self, settings: TelegramConfig) -> None:
        """Who may do what, and where (at start, and on a reload: the next update sees it)."""
        self.settings = settings
        self.admins = set(settings.admins) | set(self.extra_admins)
        self.viewers = set(settings.viewers)
        self.allowed_chats = set(settings.allowed_chats)
        self.progress_after = settings.progress_after.total_seconds()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, poll: bool) -> None:
        await self.app.initialize()
        await self.register_commands()
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
        self.confirmations.close()
        if self.tasks:  # commands still running: a short grace to answer, then cancelled
            _, late = await asyncio.wait(self.tasks, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            if late:
                log.warning("telegram: %d command(s) cancelled at stop", len(late))
                # Bounded too: a task that swallows its cancel must not hold the stop forever.
                await asyncio.wait(late, timeout=STOP_GRACE)
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    async def register_commands(self) -> None:
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
        # A message's first word (its command); a button press is on a message it did not write.
        text = update.message.text if update.message else None
        what = "(button)" if update.callback_query else "(update)"
        record = self.node.audit.record(
            command=(text or "").split(" ", 1)[0][:64] or what,
            outcome="ignored",
            user_id=user.id if user else None,
            username=user.username if user else None,
            chat_id=chat.id if chat else None,
            detail="chat or user not in the allowlist",
        )
        self.spawn(record, "audit of an ignored update")  # a slow database holds up nobody
        raise ApplicationHandlerStop

    def spawn(self, work: Coroutine[Any, Any, Any], what: str) -> None:
        """Run ``work`` beside the update loop; a failure it did not handle is logged."""

        async def run() -> None:
            try:
                await work
            except (TelegramError, StorageError) as exc:
                log.warning("telegram: %s: %s", what, exc)
            except Exception:  # a bug: logged with its traceback, the bot goes on
                log.exception("telegram: %s failed", what)

        task = asyncio.create_task(run(), name=what)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

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
        turn = self.order.take(chat.id)  # now, in update order; the work waits for it in a task
        self.spawn(self._handle_command(command, inv, turn), f"/{name}")

    def run_as_typed(self, command: Command, inv: Invocation) -> None:
        """Run ``inv`` as if its user had just typed it in its chat (an alert's button): its
        turn in the chat, the role check, the confirmation, progress, reply and audit."""
        turn = self.order.take(inv.chat_id)
        self.spawn(self._handle_command(command, inv, turn), f"/{inv.command}")

    async def _handle_command(self, command: Command, inv: Invocation, turn: Turn) -> None:
        await turn.wait()
        try:
            await self._run_command(command, inv, turn)
        finally:
            turn.end()

    async def _run_command(self, command: Command, inv: Invocation, turn: Turn) -> None:
        name, chat_id, role = inv.command, inv.chat_id, inv.role
        mutating = command.mutates_with(inv.args)
        needed = "admin" if mutating else command.role
        if ROLE_RANK[role] < ROLE_RANK[needed]:
            what = f"/{name} {inv.args_text}".strip()
            await self.send(chat_id, Reply(f"⛔ {esc(what)} is for admins."))
            await self.audit(inv, "denied", 0, "needs the admin role")
            return
        if command.private_only and inv.chat_type != "private":
            await self.send(chat_id, Reply(f"🔒 /{name} works in a private chat with me only."))
            await self.audit(inv, "denied", 0, "private chat only")
            return
        if mutating:
            # Bad arguments are refused now: a confirmation is only asked for what can run.
            if command.check is None or await self._check(command, inv):
                await self.confirmations.ask(command, inv)
            return
        title = f"⏳ <code>{esc(f'/{name} {inv.args_text}'.strip())}</code> is running…"
        working = Working(self.app.bot, chat_id, after=self.progress_after, turn=turn, title=title)
        await self.execute(command, inv, working)

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
            await self.send(inv.chat_id, self._refusal(command, exc))
            await self.audit(inv, "error", 0, str(exc))
            return False
        except Exception as exc:  # a bug must still answer; the traceback goes to the log
            log.exception("/%s: checking its arguments failed", command.name)
            name = esc(type(exc).__name__)
            await self.send(
                inv.chat_id, Reply(f"❌ /{command.name} failed: internal error ({name}).")
            )
            await self.audit(inv, "error", 0, f"{type(exc).__name__}: {exc}")
            return False
        return True

    async def execute(self, command: Command, inv: Invocation, working: Working) -> None:
        started = time.perf_counter()
        outcome, detail = "ok", ""
        try:
            async with working:
                reply = await command.handler(Context(inv, self.node, working.progress))
        except (UsageError, ClawopsError) as exc:
            outcome, detail = "error", str(exc)
            reply = self._refusal(command, exc)
        except Exception as exc:  # a bug must still answer; the traceback goes to the log
            log.exception("/%s failed", command.name)
            outcome, detail = "error", f"{type(exc).__name__}: {exc}"
            reply = Reply(f"❌ /{command.name} failed: internal error ({esc(type(exc).__name__)}).")
        duration = int((time.perf_counter() - started) * 1000)
        await working.finish(reply)
        # The reply is out and the chat's next command has started: the audit row holds up
        # nobody, even when the database makes it wait out its timeout (then it is logged).
        await self.audit(inv, outcome, duration, detail)

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        # No turn: the press acts on a message already in the chat.
        self.spawn(self.confirmations.press(update), "button press")

    async def _on_alert_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        self.spawn(self.alert_buttons.press(update), "alert button press")

    async def _on_unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or message.text is None:
            return
        name = message.text.split()[0][1:].split("@", 1)[0]
        self._answer(message.chat_id, f"Unknown command /{esc(name)}. /help lists what I can do.")

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Plain text in a private chat gets a hint rather than silence (a group's is not for
        the bot, which stays silent there)."""
        if update.effective_chat is not None:
            hint = "I answer commands, not text: /help lists what you can run here."
            self._answer(update.effective_chat.id, hint)

    def _answer(self, chat_id: int, html: str) -> None:
        """A short answer, in its turn in the chat."""
        turn = self.order.take(chat_id)

        async def answer() -> None:
            await turn.wait()
            try:
                await self.send(chat_id, Reply(html))
            finally:
                turn.end()

        self.spawn(answer(), "answer")

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.warning("telegram: %s", context.error, exc_info=context.error)

    # -- output ------------------------------------------------------------------------------

    async def send(self, chat_id: int, reply: Reply, edit: int | None = None) -> None:
        await send_reply(self.app.bot, chat_id, reply, edit)

    async def audit(self, inv: Invocation, outcome: Any, duration_ms: int, detail: str) -> None:
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

    async def send_alert(
        self, chat_id: int, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        """One alert message (with its buttons); Telegram errors propagate so the notifier can
        retry."""
        await self.app.bot.send_message(
            chat_id, text, parse_mode=ParseMode.HTML, reply_markup=markup
        )
