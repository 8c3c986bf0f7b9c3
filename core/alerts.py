"""Alert state machines, one per key (a job, a service, a machine, a check-in, a claw).

A key is ``up`` or ``down``. It goes down after ``failure_threshold`` consecutive ``critical``
observations, or ``warning_repeats`` consecutive failures when the latest is a ``warning`` (one
warning is noise, the third in a row is a problem); it recovers after ``success_threshold``
consecutive ``ok``. Every transition is a row in ``alert_flips``; notifications are sent later
from the rows not yet notified (``pending``), never inline, so nothing is lost while Telegram is
away. A flip made while its key is muted is stored already settled and ``suppressed``; so is the
recovery of a key whose going down was suppressed (nobody was told it was down).

Several nodes may share the database, so a state change is claimed with a conditional update
(``UPDATE ... WHERE key = :k AND state = :old AND failures = :f AND successes = :s``): when no
row matches, another node changed the key first, and the observation is applied again on top.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Row, and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import Database
from core.errors import StorageError
from core.tables import alert_flips, alert_states, mutes, utcnow

Observation = Literal["ok", "warning", "critical"]
ATTEMPTS = 20


@dataclass(frozen=True)
class Flip:
    id: int
    key: str
    old_state: str
    new_state: str
    at: datetime
    reason: str
    suppressed: bool = False


@dataclass(frozen=True)
class AlertState:
    key: str
    state: str
    failures: int
    successes: int
    changed_at: datetime
    last_message: str


@dataclass(frozen=True)
class Mute:
    id: int
    key: str | None
    until: datetime
    created_by: int | None


class Alerts:
    def __init__(self, db: Database, *, warning_repeats: int = 3, failure_threshold: int = 1,
                 success_threshold: int = 1) -> None:  # fmt: skip
        if min(warning_repeats, failure_threshold, success_threshold) < 1:
            raise ValueError("alert thresholds must be at least 1")
        self.db = db
        self.warning_repeats = warning_repeats
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold

    async def observe(self, key: str, status: Observation, message: str,
                      at: datetime | None = None) -> Flip | None:  # fmt: skip
        """Feed one observation; return the flip it caused, if any."""
        at = at or utcnow()
        last_error: StorageError | None = None
        for attempt in range(ATTEMPTS):
            try:
                claimed, flip = await self._apply(key, status, message, at)
            except StorageError as exc:
                # A concurrent first insert of the key, or SQLite busy: try again on top.
                claimed, flip, last_error = False, None, exc
            if claimed:
                return flip
            await asyncio.sleep(0.005 * (attempt + 1))
        if last_error is not None:
            raise last_error
        raise StorageError(f"could not record the state of {key!r}: too much contention")

    async def _apply(self, key: str, status: Observation, message: str,
                     at: datetime) -> tuple[bool, Flip | None]:  # fmt: skip
        async with self.db.begin() as conn:
            row = (await conn.execute(
                select(alert_states).where(alert_states.c.key == key)
            )).first()  # fmt: skip
            if row is None:
                await conn.execute(insert(alert_states).values(
                    key=key, state="up", failures=0, successes=0, changed_at=at, last_message=""
                ))  # fmt: skip
                state, failures, successes = "up", 0, 0
            else:
                state, failures, successes = row.state, row.failures, row.successes
            if status == "ok":
                new_failures, new_successes = 0, successes + 1
            else:
                new_failures, new_successes = failures + 1, 0
            needed = self.failure_threshold if status == "critical" else self.warning_repeats
            new_state = state
            if state == "up" and status != "ok" and new_failures >= needed:
                new_state = "down"
            elif state == "down" and status == "ok" and new_successes >= self.success_threshold:
                new_state = "up"
            values: dict[str, object] = {
                "failures": new_failures, "successes": new_successes,
                "last_message": message[:2000], "state": new_state,
            }  # fmt: skip
            if new_state != state:
                values["changed_at"] = at
            result = await conn.execute(
                update(alert_states)
                .where(alert_states.c.key == key, alert_states.c.state == state,
                       alert_states.c.failures == failures,
                       alert_states.c.successes == successes)
                .values(**values)
            )  # fmt: skip
            if result.rowcount != 1:
                return False, None  # another node got there first: roll back, apply again
            if new_state == state:
                return True, None
            suppressed = await self._is_muted(conn, key, at)
            if new_state == "up" and not suppressed:
                last_down = (await conn.execute(
                    select(alert_flips.c.suppressed)
                    .where(alert_flips.c.key == key, alert_flips.c.new_state == "down")
                    .order_by(alert_flips.c.id.desc()).limit(1)
                )).scalar()  # fmt: skip
                suppressed = bool(last_down)
            flip_id = (await conn.execute(
                insert(alert_flips).returning(alert_flips.c.id).values(
                    key=key, old_state=state, new_state=new_state, at=at, reason=message[:2000],
                    suppressed=suppressed, notified_at=at if suppressed else None,
                )
            )).scalar_one()  # fmt: skip
            return True, Flip(int(flip_id), key, state, new_state, at, message[:2000], suppressed)

    async def pending(self, limit: int = 50) -> list[Flip]:
        """Flips not notified yet, oldest first."""
        query = (
            select(alert_flips).where(alert_flips.c.notified_at.is_(None))
            .order_by(alert_flips.c.id).limit(limit)
        )  # fmt: skip
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Flip(r.id, r.key, r.old_state, r.new_state, r.at, r.reason) for r in rows]

    async def mark_notified(self, flip_id: int) -> bool:
        """Claim a flip as sent; False when another notifier already did."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(alert_flips)
                .where(alert_flips.c.id == flip_id, alert_flips.c.notified_at.is_(None))
                .values(notified_at=utcnow())
            )
            return result.rowcount == 1

    async def state(self, key: str) -> AlertState | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(
                select(alert_states).where(alert_states.c.key == key)
            )).first()  # fmt: skip
        return _state(row) if row is not None else None

    async def open_alerts(self) -> list[AlertState]:
        """Keys that are down, longest down first."""
        query = (
            select(alert_states).where(alert_states.c.state == "down")
            .order_by(alert_states.c.changed_at)
        )  # fmt: skip
        async with self.db.connect() as conn:
            return [_state(r) for r in (await conn.execute(query)).all()]

    # -- mutes -------------------------------------------------------------------------------

    async def mute(self, until: datetime, key: str | None = None, by: int | None = None) -> int:
        if until <= utcnow():
            raise ValueError("a mute must end in the future")
        async with self.db.begin() as conn:
            result = await conn.execute(
                insert(mutes)
                .returning(mutes.c.id)
                .values(key=key, until=until, created_at=utcnow(), created_by=by)
            )
            return int(result.scalar_one())

    async def unmute(self, key: str | None = None) -> int:
        """End active mutes (all, or those of ``key``); return how many ended."""
        now = utcnow()
        query = update(mutes).where(mutes.c.ended_at.is_(None), mutes.c.until > now)
        if key is not None:
            query = query.where(mutes.c.key == key)
        async with self.db.begin() as conn:
            return int((await conn.execute(query.values(ended_at=now))).rowcount)

    async def active_mutes(self, at: datetime | None = None) -> list[Mute]:
        at = at or utcnow()
        query = select(mutes).where(_active(at)).order_by(mutes.c.until)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Mute(r.id, r.key, r.until, r.created_by) for r in rows]

    async def is_muted(self, key: str, at: datetime | None = None) -> bool:
        async with self.db.connect() as conn:
            return await self._is_muted(conn, key, at or utcnow())

    @staticmethod
    async def _is_muted(conn: AsyncConnection, key: str, at: datetime) -> bool:
        query = (
            select(mutes.c.id)
            .where(_active(at), or_(mutes.c.key.is_(None), mutes.c.key == key))
            .limit(1)
        )
        return (await conn.execute(query)).first() is not None


def _active(at: datetime) -> ColumnElement[bool]:
    return and_(mutes.c.until > at, or_(mutes.c.ended_at.is_(None), mutes.c.ended_at > at))


def _state(row: Row[Any]) -> AlertState:
    return AlertState(
        row.key, row.state, row.failures, row.successes, row.changed_at, row.last_message
    )
