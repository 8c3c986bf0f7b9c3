"""LLM account cooldowns and emergency mode (SPEC 7b), in the shared node state.

Bots report that an account is rate limited until some time (``limit``); when every configured
account is in cooldown the fleet is in emergency mode (bots go Ollama-only). Both live in
``StateStore`` so every node sharing the database sees them: the cooldowns under one key, the
mode under ``"emergency"`` (``{"on", "since", "reason"}``). Switching the mode is a claim, so
when two nodes notice at once only one of them switches it (and announces it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from core.errors import InputError, StorageError
from core.state import StateStore
from core.tables import utcnow

COOLDOWNS = "llm_cooldowns"
EMERGENCY = "emergency"
ATTEMPTS = 20


@dataclass(frozen=True)
class Emergency:
    on: bool
    since: datetime | None = None
    reason: str = ""


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
            bool(value.get("on")), _when(value.get("since")), str(value.get("reason", ""))
        )

    async def switch_emergency(self, on: bool, reason: str, now: datetime | None = None) -> bool:
        """Turn emergency mode on or off; True only for the caller that actually switched it."""
        current = await self.state.read(EMERGENCY)
        if current is not None and bool(current.value.get("on")) == on:
            return False
        if current is None and not on:
            return False
        value = {"on": on, "since": (now or utcnow()).isoformat(), "reason": reason}
        return await self.state.claim(EMERGENCY, value, current.version if current else None)
