"""LLM account cooldowns and emergency mode (SPEC 7b), in the shared node state.

Bots report that an account is rate limited until some time (``limit``); when every configured
account is in cooldown the fleet is in emergency mode (bots go Ollama-only). Both live in
``StateStore`` so every node sharing the database sees them: the cooldowns under one key, the
mode under ``"emergency"`` (``{"on", "since", "reason"}``). Switching the mode is a claim, so
when two nodes notice at once only one of them switches it (and announces it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from core.errors import InputError, StorageError
from core.resources import NotFound
from core.state import StateStore
from core.tables import utcnow

COOLDOWNS = "llm_cooldowns"
EMERGENCY = "emergency"
ATTEMPTS = 20
log = logging.getLogger(__name__)
Announce = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Emergency:
    on: bool
    since: datetime | None = None
    reason: str = ""
    # Switched by hand (/emergency): cooldowns ending or starting do not switch it back.
    manual: bool = False


def _when(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


class Accounts:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    async def limit(self, name: str, until: datetime) -> None:
        """Account ``name`` is rate limited until ``until`` (a later report extends it)."""
        if not name.strip():
            raise InputError("an account needs a name")
        if until.tzinfo is None:
            raise InputError("a cooldown's end needs a timezone (UTC)")
        for _ in range(ATTEMPTS):
            current = await self.state.read(COOLDOWNS)
            value = dict(current.value) if current else {}
            known = _when(value.get(name))
            if known is not None and known >= until:
                return
            value[name] = until.isoformat()
            if await self.state.claim(COOLDOWNS, value, current.version if current else None):
                return
        raise StorageError(f"could not record the cooldown of {name!r}: too much contention")

    async def cooldowns(self, now: datetime | None = None) -> dict[str, datetime]:
        """The accounts still in cooldown at ``now``, with the end of each."""
        now = now or utcnow()
        value = await self.state.get(COOLDOWNS) or {}
        found = {name: _when(until) for name, until in value.items()}
        return {name: until for name, until in found.items() if until is not None and until > now}

    async def all_limited(self, names: Iterable[str], now: datetime | None = None) -> bool:
        """Whether every one of ``names`` is in cooldown (no names: never)."""
        wanted = set(names)
        return bool(wanted) and wanted <= set(await self.cooldowns(now))

    async def emergency(self) -> Emergency:
        value = await self.state.get(EMERGENCY) or {}
        return Emergency(
            bool(value.get("on")), _when(value.get("since")), str(value.get("reason", "")),
            bool(value.get("manual")),
        )  # fmt: skip

    async def switch_emergency(
        self, on: bool, reason: str, now: datetime | None = None, *, manual: bool = False
    ) -> bool:
        """Turn emergency mode on or off; True only for the caller that actually switched it."""
        current = await self.state.read(EMERGENCY)
        if current is not None and bool(current.value.get("on")) == on:
            return False
        if current is None and not on:
            return False
        value = {"on": on, "since": (now or utcnow()).isoformat(), "reason": reason}
        if manual:
            value["manual"] = True
        return await self.state.claim(EMERGENCY, value, current.version if current else None)


async def settle_emergency(
    accounts: Accounts, names: list[str], announce: Announce, *, reported: bool = False
) -> bool:
    """Emergency on when every account in ``names`` is limited, off when one is free; each switch
    is announced once (by the one caller whose claim won). A mode switched by hand is left alone,
    except that a new limit report (``reported``) may still turn a manual "off" on. Returns the
    mode."""
    current = await accounts.emergency()
    if not names or (current.manual and not (reported and not current.on)):
        return current.on
    now = utcnow()
    limited = await accounts.all_limited(names, now)
    if limited and not current.on:
        reason = f"all {len(names)} LLM accounts are rate limited"
        if await accounts.switch_emergency(True, reason, now):
            await announce(
                f"🚨 Emergency mode: every LLM account is rate limited ({', '.join(names)}); "
                "bots go Ollama-only until a cooldown ends."
            )
    elif not limited and current.on:
        free = sorted(set(names) - set(await accounts.cooldowns(now)))
        if await accounts.switch_emergency(False, f"{', '.join(free)} available again", now):
            await announce(f"✅ Emergency mode over: {', '.join(free)} is available again.")
    return (await accounts.emergency()).on


class EmergencyWatch:
    """The node's side of emergency mode: a reported limit switches it at once (not at the next
    healer run), and a timer at the earliest cooldown end switches it off again.

    The timer is an asyncio one in this process (no polling); every node sharing the database
    arms its own on the reports it takes, and the claim in ``switch_emergency`` makes sure only
    one of them announces. The healer's run is the backstop if every node was down meanwhile.
    """

    def __init__(self, accounts: Accounts, names: list[str], announce: Announce) -> None:
        self.accounts = accounts
        self.names = names
        self.announce = announce
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    async def limited(self, name: str, until: datetime) -> bool:
        """Record a rate limit of a configured account; the mode after it."""
        if name not in self.names:
            known = ", ".join(self.names) or "none configured"
            raise NotFound(f"unknown LLM account {name!r} (known: {known})")
        await self.accounts.limit(name, until)
        return await self.check(reported=True)

    async def check(self, *, reported: bool = False) -> bool:
        mode = await settle_emergency(self.accounts, self.names, self.announce, reported=reported)
        await self.arm()
        return mode

    async def arm(self) -> None:
        """(Re)schedule a check at the earliest cooldown end while emergency mode is on."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not (await self.accounts.emergency()).on:
            return
        ends = [t for n, t in (await self.accounts.cooldowns()).items() if n in self.names]
        if not ends:
            return
        delay = max((min(ends) - utcnow()).total_seconds(), 0) + 0.05
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="emergency-check")

    async def _run(self) -> None:
        try:
            await self.check()
        except Exception:  # a database hiccup: the healer's run settles it later
            log.exception("emergency: the check at a cooldown's end failed")

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
