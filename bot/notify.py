"""Sends alert flips to the alert chat: from stored rows, retried until Telegram takes them.

A flip is marked notified only after Telegram accepted the message, so a network error, a 429 or
a 5xx — or Telegram being off on this node — only delays it: it is sent when Telegram answers
again. Network errors back off exponentially (1 s to 60 s); a 429 waits its ``retry_after``.
At each round the node that talks to Telegram first stores the follow-ups that are due
(reminders, ends of silences: ``Alerts.follow_ups``), so they go out the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from telegram import InlineKeyboardMarkup
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError

from bot.format import esc, plain
from core.alerts import Alerts, Flip
from core.errors import StorageError
from core.outbox import Outbox

if TYPE_CHECKING:
    from bot.telegram import TelegramBot

log = logging.getLogger("clawops.alerts")
MAX_BACKOFF = 60.0


def flip_text(flip: Flip) -> str:
    key, reason = esc(flip.key), esc(flip.reason)
    if flip.kind == "reminder":
        return f"🔁 <b>{key}</b> is still down\n{reason}"
    if flip.kind == "unsilenced":
        if flip.new_state == "down":
            return f"🔴 <b>{key}</b> is down (its silence is over)\n{reason}"
        return f"✅ <b>{key}</b> recovered (while silenced)\n{reason}"
    if flip.new_state == "down":
        return f"🔴 <b>{key}</b> is down\n{reason}"
    return f"✅ <b>{key}</b> recovered\n{reason}"


class Notifier:
    def __init__(
        self,
        alerts: Alerts,
        bot: Callable[[], TelegramBot | None],
        chat_id: int | None,
        *,
        interval: float = 5.0,
        outbox: Outbox | None = None,
    ) -> None:
        self.alerts = alerts
        self.outbox = outbox
        self.bot = bot
        self.chat_id = chat_id
        self.interval = interval
        self.sent = 0
        self._failures = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Something new may be pending (a flip was just stored)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alert-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.0
        while True:
            if delay:
                await asyncio.sleep(delay)
            else:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
                # arrives as the wake fires, and stop() would then wait for this loop forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self._wake.wait()
            self._wake.clear()
            try:
                delay = await self.flush()
            except StorageError as exc:
                log.warning("alerts: cannot read pending flips: %s", exc)
                delay = min(max(delay * 2, 1.0), MAX_BACKOFF)

    async def flush(self) -> float:
        """Send what is pending (flips, then outbox messages); the delay before the next try
        (0 when all went out)."""
        bot = self.bot()
        if bot is None or not bot.polling or self.chat_id is None:
            return 0.0  # Telegram is off here: the flips wait in the database
        # Reminders and the ends of silences are stored by the node that talks to Telegram.
        await self.alerts.follow_ups()
        for flip in await self.alerts.pending():
            markup = bot.alert_buttons.markup(flip)  # a "down" message's buttons
            fallback = f"{flip.key}: {flip.new_state}"
            delay = await self._deliver(bot, flip_text(flip), fallback, markup)
            if delay is not None:
                return delay
            await self.alerts.mark_notified(flip.id)
            self.sent += 1
        if self.outbox is not None:
            for message in await self.outbox.pending():
                delay = await self._deliver(bot, message.text, plain(message.text))
                if delay is not None:
                    return delay
                await self.outbox.mark_sent(message.id)
                self.sent += 1
        return 0.0

    async def _deliver(
        self,
        bot: TelegramBot,
        text: str,
        fallback: str,
        markup: InlineKeyboardMarkup | None = None,
    ) -> float | None:
        """Send one message; None when Telegram took it, else how long to wait before retrying."""
        assert self.chat_id is not None
        try:
            await bot.send_alert(self.chat_id, text, markup)
        except RetryAfter as exc:
            retry = exc.retry_after
            seconds = retry.total_seconds() if hasattr(retry, "total_seconds") else retry
            log.info("alerts: Telegram asks to wait %s s", seconds)
            return float(seconds)
        except BadRequest as exc:
            # Permanent for this text (it will never parse): send it plain, once.
            log.warning("alerts: message refused (%s); sending as plain text", exc)
            try:
                await bot.app.bot.send_message(self.chat_id, fallback[:4000])
            except TelegramError:
                return 1.0
        except (NetworkError, TelegramError) as exc:
            self._failures += 1
            delay = min(2.0 ** (self._failures - 1), MAX_BACKOFF)
            log.info("alerts: Telegram unavailable (%s); retrying in %.0f s", exc, delay)
            return delay
        self._failures = 0
        return None
