"""Alert state machines, one per key (a job, a service, a machine, a check-in, a claw).

A key is ``up`` or ``down``. It goes down after ``failure_threshold`` consecutive ``critical``
observations (the key's rule's, else ``[alerts]``'s; see ``core.alerts.policy``), or
``warning_repeats`` consecutive failures when the latest is a ``warning`` (one warning is noise,
the third in a row is a problem); it recovers after ``success_threshold`` consecutive ``ok``.
Every transition is a row in ``alert_flips``; notifications are sent later from the rows not yet
notified (``pending``), never inline, so nothing is lost while Telegram is away.

Each key remembers what the chat was last told (``announced``). A flip made while the key is
silenced (a ``/mute`` whose pattern covers it, a maintenance window, a paused check-in) is stored
already settled, ``suppressed``, and the key is ``held``: when the silence is over,
``follow_ups`` tells the chat once if the state is not what it last heard. The recovery of a
down nobody was told of is suppressed too. ``follow_ups`` also stores the reminders of keys
that stay down.

Several nodes may share the database, so a state change is claimed with a conditional update
(``UPDATE ... WHERE key = :k AND state = :old AND failures = :f AND successes = :s``): when no
row matches, another node changed the key first, and the observation is applied again on top.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Row, and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.alerts.policy import AlertPolicy, covers
from core.db import Database
from core.durations import format_duration
from core.errors import StorageError
from core.tables import alert_flips, alert_states, mutes, utcnow

Observation = Literal["ok", "warning", "critical"]
# flip: a transition; reminder: still down after reminder_interval; unsilenced: still down when
# the mute or maintenance window that held its flip back ended; mirrored: copied from the peer.
FlipKind = Literal["flip", "reminder", "unsilenced", "mirrored"]
Silencer = Callable[[str, datetime], Awaitable[str | None]]
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
    kind: str = "flip"
    # What held the notification back (a mute, a maintenance window, a pause), if anything.
    silenced_by: str = ""


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
    def __init__(
        self, db: Database, *, warning_repeats: int = 3, policy: AlertPolicy | None = None
    ) -> None:
        if warning_repeats < 1:
            raise ValueError("alert thresholds must be at least 1")
        self.db = db
        self.warning_repeats = warning_repeats
        self.policy = policy or AlertPolicy()
        # Beside mutes and maintenance windows, what else silences a key (a paused check-in):
        # each answers what silences ``key`` at ``at``, or None.
        self.silencers: list[Silencer] = []

    async def observe(
        self, key: str, status: Observation, message: str, at: datetime | None = None
    ) -> Flip | None:
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

    async def _apply(
        self, key: str, status: Observation, message: str, at: datetime
    ) -> tuple[bool, Flip | None]:
        async with self.db.begin() as conn:
            row = (
                await conn.execute(select(alert_states).where(alert_states.c.key == key))
            ).first()
            if row is None:
                await conn.execute(
                    insert(alert_states).values(
                        key=key,
                        state="up",
                        failures=0,
                        successes=0,
                        changed_at=at,
                        last_message="",
                        announced="up",
                        held=False,
                    )
                )
                state, failures, successes = "up", 0, 0
            else:
                state, failures, successes = row.state, row.failures, row.successes
            if status == "ok":
                new_failures, new_successes = 0, successes + 1
            else:
                new_failures, new_successes = failures + 1, 0
            thresholds = self.policy.thresholds(key)
            needed = (
                thresholds.failure
                if status == "critical"
                else max(self.warning_repeats, thresholds.failure)
            )
            new_state = state
            if state == "up" and status != "ok" and new_failures >= needed:
                new_state = "down"
            elif state == "down" and status == "ok" and new_successes >= thresholds.success:
                new_state = "up"
            values: dict[str, object] = {
                "failures": new_failures,
                "successes": new_successes,
                "last_message": message[:2000],
                "state": new_state,
            }
            announced, held = (row.announced, row.held) if row is not None else ("up", False)
            flip: Flip | None = None
            if new_state != state:
                values["changed_at"] = at
                silenced_by = await self._silenced_by(conn, key, at) or ""
                # Sent only when it tells something: not while silenced (held, to be looked at
                # again when the silence ends), not the recovery of a down nobody was told of.
                suppressed = bool(silenced_by) or new_state == announced
                values["held"] = bool(silenced_by)
                if not suppressed:
                    values["announced"] = new_state
                    values["reminded_at"] = None
                reason = message[:2000]
                flip = Flip(0, key, state, new_state, at, reason, suppressed, "flip", silenced_by)
            result = await conn.execute(
                update(alert_states)
                .where(
                    alert_states.c.key == key,
                    alert_states.c.state == state,
                    alert_states.c.failures == failures,
                    alert_states.c.successes == successes,
                    alert_states.c.announced == announced,
                    alert_states.c.held == held,
                )
                .values(**values)
            )
            if result.rowcount != 1:
                return False, None  # another node got there first: roll back, apply again
            return True, None if flip is None else await self._store_flip(conn, flip)

    @staticmethod
    async def _store_flip(conn: AsyncConnection, flip: Flip) -> Flip:
        """Insert ``flip`` (its id is given by the database); a suppressed one is stored settled."""
        flip_id = (
            await conn.execute(
                insert(alert_flips)
                .returning(alert_flips.c.id)
                .values(
                    key=flip.key,
                    old_state=flip.old_state,
                    new_state=flip.new_state,
                    at=flip.at,
                    reason=flip.reason,
                    suppressed=flip.suppressed,
                    kind=flip.kind,
                    silenced_by=flip.silenced_by[:200],
                    notified_at=flip.at if flip.suppressed else None,
                )
            )
        ).scalar_one()
        return replace(flip, id=int(flip_id))

    async def pending(self, limit: int = 50) -> list[Flip]:
        """Flips not notified yet, oldest first."""
        query = (
            select(alert_flips)
            .where(alert_flips.c.notified_at.is_(None))
            .order_by(alert_flips.c.id)
            .limit(limit)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_flip(r) for r in rows]

    async def flip(self, flip_id: int) -> Flip | None:
        """One stored flip (what an alert's buttons act on)."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(select(alert_flips).where(alert_flips.c.id == flip_id))
            ).first()
        return _flip(row) if row is not None else None

    async def settle(self, key: str, reason: str, at: datetime | None = None) -> Flip | None:
        """Put a down key up without telling anyone (a check-in that was paused): the flip is
        stored suppressed. None when the key was not down."""
        at = at or utcnow()
        for _ in range(ATTEMPTS):
            async with self.db.begin() as conn:
                flip = Flip(0, key, "down", "up", at, reason[:2000], True, silenced_by=reason)
                settled = await self.settle_in(conn, flip, last_message=reason)
            if settled is not None:
                return settled or None
            await asyncio.sleep(0.005)
        raise StorageError(f"could not settle {key!r}: too much contention")

    @classmethod
    async def settle_in(
        cls, conn: AsyncConnection, flip: Flip, last_message: str
    ) -> Flip | Literal[False] | None:
        """In ``conn``'s transaction: put ``flip.key`` up silently and store ``flip`` (a
        suppressed down→up). False when the key is not down, None when another writer changed
        it since it was read (roll back and try again)."""
        key = flip.key
        row = (await conn.execute(select(alert_states).where(alert_states.c.key == key))).first()
        if row is None or row.state != "down":
            return False
        result = await conn.execute(
            update(alert_states)
            .where(
                alert_states.c.key == key,
                alert_states.c.state == "down",
                alert_states.c.changed_at == row.changed_at,
            )
            .values(
                state="up",
                failures=0,
                successes=0,
                changed_at=flip.at,
                last_message=last_message[:2000],
                announced="up",  # whoever settles it says so (the /pause reply)
                held=False,
                reminded_at=None,
            )
        )
        if result.rowcount != 1:
            return None
        return await cls._store_flip(conn, flip)

    async def follow_ups(self, at: datetime | None = None) -> list[Flip]:
        """Store what is due about keys that did not change (sent like flips, by the notifier):

        - ``unsilenced``: a flip held back by a mute, a maintenance window or a pause, once the
          silence is over, when the key's state is not the one the chat was last told (a key
          that went down in the window and is still down; one announced down that recovered in
          it). A key back to what the chat knows is let go without a word.
        - ``reminder``: a key announced down and still down, every ``reminder_interval`` (its
          rule's, else ``[alerts]``'s) unless silenced.

        Each is claimed with a conditional update, so two nodes store it once."""
        at = at or utcnow()
        query = select(alert_states).where(
            or_(
                alert_states.c.held.is_(True),
                and_(alert_states.c.state == "down", alert_states.c.announced == "down"),
            )
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        stored = []
        for row in rows:
            if row.held:
                flip = await self._unsilence(row, at)
            else:
                flip = await self._remind(row, at)
            if flip is not None:
                stored.append(flip)
        return stored

    async def _unsilence(self, row: Row[Any], at: datetime) -> Flip | None:
        async with self.db.begin() as conn:
            if await self._silenced_by(conn, row.key, at):
                return None
            held = (
                await conn.execute(
                    select(alert_flips.c.silenced_by)
                    .where(alert_flips.c.key == row.key, alert_flips.c.suppressed.is_(True))
                    .order_by(alert_flips.c.id.desc())
                    .limit(1)
                )
            ).scalar() or "a silence"
            tell = row.state != row.announced
            result = await conn.execute(
                update(alert_states)
                .where(
                    alert_states.c.key == row.key,
                    alert_states.c.held.is_(True),
                    alert_states.c.state == row.state,
                    alert_states.c.announced == row.announced,
                )
                .values(held=False, announced=row.state, reminded_at=at if tell else None)
            )
            if result.rowcount != 1 or not tell:
                return None
            since = format_duration(at - row.changed_at)
            what = "down" if row.state == "down" else "up"
            reason = f"{what} for {since}, held back while {held}: {row.last_message}"
            flip = Flip(0, row.key, row.announced, row.state, at, reason[:2000], kind="unsilenced")
            return await self._store_flip(conn, flip)

    async def _remind(self, row: Row[Any], at: datetime) -> Flip | None:
        interval = self.policy.thresholds(row.key).reminder
        last = row.reminded_at or row.changed_at
        if interval is None or at - last < interval:
            return None
        async with self.db.begin() as conn:
            if await self._silenced_by(conn, row.key, at):
                return None
            result = await conn.execute(
                update(alert_states)
                .where(
                    alert_states.c.key == row.key,
                    alert_states.c.state == "down",
                    alert_states.c.changed_at == row.changed_at,
                    alert_states.c.reminded_at == row.reminded_at
                    if row.reminded_at is not None
                    else alert_states.c.reminded_at.is_(None),
                )
                .values(reminded_at=at)
            )
            if result.rowcount != 1:
                return None
            # A reminder still waiting for Telegram is superseded by this one (one, not a burst,
            # after Telegram was away for hours).
            await conn.execute(
                update(alert_flips)
                .where(
                    alert_flips.c.key == row.key,
                    alert_flips.c.kind == "reminder",
                    alert_flips.c.notified_at.is_(None),
                )
                .values(notified_at=at, suppressed=True)
            )
            reason = f"down for {format_duration(at - row.changed_at)}: {row.last_message}"
            flip = Flip(0, row.key, "down", "down", at, reason[:2000], kind="reminder")
            return await self._store_flip(conn, flip)

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
            row = (
                await conn.execute(select(alert_states).where(alert_states.c.key == key))
            ).first()
        return _state(row) if row is not None else None

    async def open_alerts(self) -> list[AlertState]:
        """Keys that are down, longest down first."""
        query = (
            select(alert_states)
            .where(alert_states.c.state == "down")
            .order_by(alert_states.c.changed_at)
        )
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

    async def end_mutes(self, ids: list[int], at: datetime | None = None) -> int:
        """End the active mutes with these ids; how many ended."""
        at = at or utcnow()
        query = update(mutes).where(mutes.c.id.in_(ids), _active(at)).values(ended_at=at)
        async with self.db.begin() as conn:
            return int((await conn.execute(query)).rowcount)

    async def active_mutes(self, at: datetime | None = None) -> list[Mute]:
        at = at or utcnow()
        query = select(mutes).where(_active(at)).order_by(mutes.c.until)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Mute(r.id, r.key, r.until, r.created_by) for r in rows]

    async def is_muted(self, key: str, at: datetime | None = None) -> bool:
        async with self.db.connect() as conn:
            return await self._muted_until(conn, key, at or utcnow()) is not None

    async def silenced_by(self, key: str, at: datetime | None = None) -> str | None:
        """What keeps ``key``'s alerts from being sent at ``at`` (a mute, a maintenance window,
        a pause), or None."""
        async with self.db.connect() as conn:
            return await self._silenced_by(conn, key, at or utcnow())

    async def _silenced_by(self, conn: AsyncConnection, key: str, at: datetime) -> str | None:
        until = await self._muted_until(conn, key, at)
        if until is not None:
            return f"muted until {until:%Y-%m-%d %H:%M} UTC"
        window = self.policy.window_over(key, at)
        if window is not None:
            return f"maintenance window {window[0].label} until {window[1]:%Y-%m-%d %H:%M} UTC"
        for silencer in self.silencers:
            reason = await silencer(key, at)
            if reason:
                return reason
        return None

    @staticmethod
    async def _muted_until(conn: AsyncConnection, key: str, at: datetime) -> datetime | None:
        """The end of the latest-ending active mute covering ``key`` (a mute's key is a pattern,
        see ``core.alerts.policy.covers``), or None."""
        rows = (await conn.execute(select(mutes.c.key, mutes.c.until).where(_active(at)))).all()
        ends = [r.until for r in rows if covers(r.key, key)]
        return max(ends) if ends else None


def _active(at: datetime) -> ColumnElement[bool]:
    return and_(mutes.c.until > at, or_(mutes.c.ended_at.is_(None), mutes.c.ended_at > at))


def _flip(row: Row[Any]) -> Flip:
    return Flip(
        int(row.id),
        row.key,
        row.old_state,
        row.new_state,
        row.at,
        row.reason,
        bool(row.suppressed),
        row.kind,
        row.silenced_by,
    )


def _state(row: Row[Any]) -> AlertState:
    return AlertState(
        row.key, row.state, row.failures, row.successes, row.changed_at, row.last_message
    )
