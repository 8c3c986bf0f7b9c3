"""Mirroring the open alerts of the failover peer, so a takeover sends no alert twice.

Each node keeps its own alert state when it has its own database. The node that is not polling
copies, at each failover check, what its active peer holds down (``GET /api/alerts``, built by
``AlertMirror.report``) into its own store (``mirror``):

- a key down at the peer and not here goes down here, with a flip of kind ``mirrored`` stored
  as notified when the peer announced it (pending when it did not: this node sends it if it
  takes over before the peer does);
- a key down here and not at the peer goes up here, silently (suppressed, kind ``mirrored``);
- a key down at both is only settled: this node's pending flips of it are marked notified when
  the peer announced it;
- this node's pending flips of keys the peer holds up (a recovery the peer already sent) are
  settled;
- the peer's active mutes become this node's (a ``/mute`` made before the primary went down
  for maintenance still holds on the standby that takes over), and a mute the peer no longer
  has ends here.

Keys of the failover itself (``failover:*``) are about the node that raised them and are not
mirrored.

So after a takeover the standby's state is what the primary announced, and after a yield the
primary's is what the standby announced. Updates are conditional as in ``core.alerts.store``;
when both nodes share one database (each answer names its database) nothing is written at all:
the states agree, and the peer's pending flips are its notifier's to send.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.alerts.store import ATTEMPTS, Alerts, Flip, Mute
from core.errors import StorageError
from core.state import StateStore
from core.tables import alert_flips, alert_states, utcnow

# The node_state key holding a random name of the database (nodes sharing it see one name).
DATABASE_KEY = "alerts:database"
MAX_KEY = 200
LOCAL_KEYS = ("failover:",)  # about the node that raised them: never mirrored
SAME_END = timedelta(seconds=1)  # a mute's end, as the peer and this database store it
# One conditional change of a key in a transaction: True (changed), False (nothing to do), None
# (another writer changed the key since it was read: read it again).
Change = Callable[[AsyncConnection], Awaitable[bool | None]]


@dataclass(frozen=True)
class PeerAlert:
    """One key the peer holds down."""

    key: str
    since: datetime
    message: str
    # The peer's last transition of the key into down is settled (sent, or held back on purpose).
    announced: bool
    # What held that transition back at the peer (a mute, a window), when nobody was told.
    silenced_by: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "since": self.since.isoformat(),
            "message": self.message,
            "announced": self.announced,
            "silenced_by": self.silenced_by,
        }


@dataclass(frozen=True)
class PeerMute:
    """One mute active at the peer (``key``: its pattern, None for every key)."""

    key: str | None
    until: datetime
    by: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "until": self.until.isoformat(), "by": self.by}


@dataclass(frozen=True)
class PeerReport:
    """A peer's ``GET /api/alerts`` answer."""

    node: str
    active: bool
    database: str
    alerts: list[PeerAlert]
    mutes: list[PeerMute] = field(default_factory=list)


@dataclass(frozen=True)
class MirrorResult:
    shared: bool = False  # one database: nothing to do
    down: tuple[str, ...] = ()  # keys put down here
    up: tuple[str, ...] = ()  # keys put up here, silently
    settled: int = 0  # pending flips of this node marked notified
    mutes_added: int = 0  # the peer's mutes made here
    mutes_ended: int = 0  # mutes ended here because the peer has them no more
    skipped: tuple[str, ...] = ()  # keys another writer kept changing (tried again next time)

    @property
    def changed(self) -> bool:
        return bool(self.down or self.up or self.settled or self.mutes_added or self.mutes_ended)

    def describe(self) -> str:
        if self.shared:
            return "one database: nothing to mirror"
        parts = []
        if self.down:
            parts.append(f"down: {', '.join(self.down)}")
        if self.up:
            parts.append(f"up: {', '.join(self.up)}")
        if self.settled:
            parts.append(f"{self.settled} pending flip(s) settled")
        if self.mutes_added or self.mutes_ended:
            parts.append(f"mutes: {self.mutes_added} added, {self.mutes_ended} ended")
        if self.skipped:
            parts.append(f"contended: {', '.join(self.skipped)}")
        return "; ".join(parts) or "in agreement"


def parse_report(answer: object) -> PeerReport:
    """A peer's answer, checked; ValueError says what is wrong with it."""
    if not isinstance(answer, Mapping):
        raise ValueError("the answer is not a JSON object")
    node, active, database = answer.get("node"), answer.get("active"), answer.get("database")
    items = answer.get("alerts")
    if not isinstance(node, str) or not isinstance(active, bool):
        raise ValueError("'node' must be a string and 'active' true or false")
    if not isinstance(database, str) or not database:
        raise ValueError("'database' must name the peer's database")
    if not isinstance(items, list):
        raise ValueError("'alerts' must be a list")
    alerts: list[PeerAlert] = []
    for item in items:
        if not isinstance(item, Mapping):
            raise ValueError("each alert must be an object")
        key, since, message = item.get("key"), item.get("since"), item.get("message")
        announced, silenced = item.get("announced"), item.get("silenced_by", "")
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY:
            raise ValueError(f"an alert key must be 1 to {MAX_KEY} characters")
        if not isinstance(message, str) or not isinstance(announced, bool):
            raise ValueError(f"{key}: 'message' must be a string and 'announced' true or false")
        if not isinstance(silenced, str) or not isinstance(since, str):
            raise ValueError(f"{key}: 'since' and 'silenced_by' must be strings")
        try:
            at = datetime.fromisoformat(since)
        except ValueError:
            raise ValueError(f"{key}: 'since' is not an ISO date and time") from None
        if at.tzinfo is None:
            raise ValueError(f"{key}: 'since' has no time zone")
        alerts.append(PeerAlert(key, at, message[:2000], announced, silenced[:200]))
    return PeerReport(node, active, database, alerts, _parse_mutes(answer.get("mutes", [])))


def _parse_mutes(items: object) -> list[PeerMute]:
    """The peer's active mutes (a peer that does not send them has none to mirror)."""
    if not isinstance(items, list):
        raise ValueError("'mutes' must be a list")
    mutes = []
    for item in items:
        if not isinstance(item, Mapping):
            raise ValueError("each mute must be an object")
        key, until, by = item.get("key"), item.get("until"), item.get("by")
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_KEY):
            raise ValueError(f"a mute's key must be null or 1 to {MAX_KEY} characters")
        if by is not None and (not isinstance(by, int) or isinstance(by, bool)):
            raise ValueError("a mute's 'by' must be null or a user id")
        if not isinstance(until, str):
            raise ValueError("a mute's 'until' must be a string")
        try:
            end = datetime.fromisoformat(until)
        except ValueError:
            raise ValueError("a mute's 'until' is not an ISO date and time") from None
        if end.tzinfo is None:
            raise ValueError("a mute's 'until' has no time zone")
        mutes.append(PeerMute(key, end, by))
    return mutes


class AlertMirror:
    """This node's side of mirroring: what it tells its peer, and applying the peer's answer."""

    def __init__(self, alerts: Alerts, state: StateStore) -> None:
        self.alerts = alerts
        self.state = state
        self._database: str | None = None

    async def database(self) -> str:
        """A random name of this node's database, made once and kept in it."""
        if self._database is None:
            for _ in range(5):
                found = await self.state.get(DATABASE_KEY)
                name = found.get("name") if found is not None else None
                if isinstance(name, str) and name:
                    self._database = name
                    break
                if await self.state.claim(DATABASE_KEY, {"name": secrets.token_hex(12)}, None):
                    continue  # read it back: a concurrent first claim may have won
            else:
                raise StorageError("could not name the database for alert mirroring")
        assert self._database is not None
        return self._database

    async def report(self) -> dict[str, Any]:
        """The body of ``GET /api/alerts`` (without ``node`` and ``active``, the node's to add)."""
        return {
            "database": await self.database(),
            "alerts": [a.as_json() for a in await open_alerts(self.alerts)],
            "mutes": [
                PeerMute(m.key, m.until, m.created_by).as_json()
                for m in await self.alerts.active_mutes()
            ],
        }

    async def apply(self, answer: object, at: datetime | None = None) -> MirrorResult:
        """Mirror a peer's ``GET /api/alerts`` answer (ValueError when it is malformed)."""
        report = parse_report(answer)
        if report.database == await self.database():
            return MirrorResult(shared=True)
        added, ended = await mirror_mutes(self.alerts, report.mutes, at)
        result = await mirror(self.alerts, report.alerts, peer=report.node, at=at)
        return replace(result, mutes_added=added, mutes_ended=ended)


async def mirror_mutes(
    alerts: Alerts, at_peer: Sequence[PeerMute], at: datetime | None = None
) -> tuple[int, int]:
    """Make this node's active mutes the peer's: (how many were added, how many ended)."""
    at = at or utcnow()
    here = await alerts.active_mutes(at)

    def same(mine: Mute, theirs: PeerMute) -> bool:
        return mine.key == theirs.key and abs(mine.until - theirs.until) <= SAME_END

    added = 0
    for mute in at_peer:
        if mute.until > at and not any(same(m, mute) for m in here):
            with contextlib.suppress(ValueError):  # it ended in between
                await alerts.mute(mute.until, key=mute.key, by=mute.by)
                added += 1
    gone = [m.id for m in here if not any(same(m, p) for p in at_peer)]
    return added, await alerts.end_mutes(gone, at) if gone else 0


async def open_alerts(alerts: Alerts) -> list[PeerAlert]:
    """The keys down in ``alerts``, each with whether its going down was announced."""
    down = await alerts.open_alerts()
    if not down:
        return []
    query = (
        select(alert_flips)
        .where(alert_flips.c.key.in_([s.key for s in down]), alert_flips.c.new_state == "down")
        .order_by(alert_flips.c.id)
    )
    async with alerts.db.connect() as conn:
        flips = (await conn.execute(query)).all()
    report = []
    for state in down:
        own = [f for f in flips if f.key == state.key]
        starts = [i for i, f in enumerate(own) if f.old_state != "down"]
        if not starts:  # no transition recorded (cannot happen through Alerts): nobody was told
            report.append(PeerAlert(state.key, state.changed_at, state.last_message, False))
            continue
        went_down, later = own[starts[-1]], own[starts[-1] + 1 :]
        # Held back, unless a later notice (the end of the silence) told the chat after all.
        told = any(f.notified_at is not None and not f.suppressed for f in later)
        silenced = (went_down.silenced_by or "silenced") if went_down.suppressed else ""
        report.append(
            PeerAlert(
                state.key,
                state.changed_at,
                state.last_message,
                went_down.notified_at is not None,
                "" if told else silenced,
            )
        )
    return report


async def mirror(
    alerts: Alerts, held: Sequence[PeerAlert], *, peer: str = "the peer", at: datetime | None = None
) -> MirrorResult:
    """Make this node's store agree with what the peer holds down (``held``): see the module
    docstring. Every change is conditional; a key another writer keeps changing is skipped."""
    at = at or utcnow()
    held = [a for a in held if not a.key.startswith(LOCAL_KEYS)]
    at_peer = {a.key: a for a in held}
    async with alerts.db.connect() as conn:
        rows = (await conn.execute(select(alert_states.c.key, alert_states.c.state))).all()
    here = {r.key: r.state for r in rows}
    down: list[str] = []
    up: list[str] = []
    skipped: list[str] = []
    for alert in held:
        if here.get(alert.key) != "down":
            done = await _contended(alerts, partial(_put_down, alert=alert, peer=peer, at=at))
            _count(done, alert.key, down, skipped)
    for key, state in here.items():
        if state == "down" and key not in at_peer and not key.startswith(LOCAL_KEYS):
            done = await _contended(alerts, partial(_put_up, key=key, peer=peer, at=at))
            _count(done, key, up, skipped)
    settled = await _settle(alerts, at_peer, at)
    return MirrorResult(down=tuple(down), up=tuple(up), settled=settled, skipped=tuple(skipped))


def _count(done: bool | None, key: str, changed: list[str], skipped: list[str]) -> None:
    if done:
        changed.append(key)
    elif done is None:
        skipped.append(key)


async def _contended(alerts: Alerts, change: Change) -> bool | None:
    """Run ``change(conn)`` in a transaction until it is not beaten by another writer: True when
    it changed something, False when there was nothing to change, None when it kept losing."""
    for attempt in range(ATTEMPTS):
        try:
            async with alerts.db.begin() as conn:
                done = await change(conn)
            if done is not None:
                return done
        except StorageError:
            pass  # a concurrent first insert of the key, or SQLite busy: look again
        await asyncio.sleep(0.005 * (attempt + 1))
    return None


async def _put_down(
    conn: AsyncConnection, alert: PeerAlert, peer: str, at: datetime
) -> bool | None:
    row = (await conn.execute(select(alert_states).where(alert_states.c.key == alert.key))).first()
    if row is not None and row.state == "down":
        return False
    silenced = bool(alert.silenced_by)
    values = {
        "state": "down",
        "successes": 0,
        "changed_at": alert.since,
        "last_message": alert.message,
        # As at the peer: told (or to be told, by whichever node sends its pending flip), or
        # held back by a silence and looked at again when it ends (core.alerts.store).
        "announced": "up" if silenced else "down",
        "held": silenced,
        "reminded_at": None,
    }
    if row is None:
        await conn.execute(insert(alert_states).values(key=alert.key, failures=0, **values))
    else:
        result = await conn.execute(
            update(alert_states)
            .where(
                alert_states.c.key == alert.key,
                alert_states.c.state == row.state,
                alert_states.c.failures == row.failures,
                alert_states.c.successes == row.successes,
            )
            .values(**values)
        )
        if result.rowcount != 1:
            return None
    await _insert_flip(
        conn,
        alert.key,
        "up",
        "down",
        at,
        alert.message,
        suppressed=silenced,
        silenced_by=alert.silenced_by,
        notified=alert.announced or silenced,
    )
    return True


async def _put_up(conn: AsyncConnection, key: str, peer: str, at: datetime) -> bool | None:
    flip = Flip(
        0, key, "down", "up", at, f"not down at {peer}", True, "mirrored", f"mirrored from {peer}"
    )
    settled = await Alerts.settle_in(conn, flip, last_message=f"up at {peer}")
    return None if settled is None else bool(settled)


async def _insert_flip(
    conn: AsyncConnection,
    key: str,
    old: str,
    new: str,
    at: datetime,
    reason: str,
    *,
    suppressed: bool,
    silenced_by: str,
    notified: bool,
) -> None:
    await conn.execute(
        insert(alert_flips).values(
            key=key,
            old_state=old,
            new_state=new,
            at=at,
            reason=reason[:2000],
            suppressed=suppressed,
            kind="mirrored",
            silenced_by=silenced_by[:200],
            notified_at=at if notified else None,
        )
    )


async def _settle(alerts: Alerts, at_peer: Mapping[str, PeerAlert], at: datetime) -> int:
    """Mark notified this node's pending flips of keys the peer holds up, or down and announced."""
    async with alerts.db.connect() as conn:
        pending = (
            await conn.execute(
                select(alert_flips.c.id, alert_flips.c.key).where(
                    alert_flips.c.notified_at.is_(None)
                )
            )
        ).all()
    ids = [r.id for r in pending if r.key not in at_peer or at_peer[r.key].announced]
    settled = 0
    for start in range(0, len(ids), 500):
        async with alerts.db.begin() as conn:
            result = await conn.execute(
                update(alert_flips)
                .where(alert_flips.c.id.in_(ids[start : start + 500]))
                .where(alert_flips.c.notified_at.is_(None))
                .values(notified_at=at)
            )
            settled += int(result.rowcount)
    return settled
