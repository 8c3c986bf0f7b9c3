"""The database side of claws: reserving a Mini and a port, claiming state changes, rotation.

``reserve`` is the one transaction that places a claw: no remote call happens inside it.

1. Refuse an (org, slug) that exists.
2. Read the online and reachable Minis with room, least loaded first (a plain read).
3. PostgreSQL: lock a candidate's row (``FOR UPDATE SKIP LOCKED``, so concurrent provisions
   spread over free Minis instead of queueing on one), recount its claws under the lock and
   take it if it still has room. If every candidate is locked by someone else, roll back and
   start again blocking (``FOR UPDATE``) on the least loaded one as the first lock of the new
   transaction, so no transaction ever waits while holding a Mini lock: no deadlock.
   SQLite: ``BEGIN IMMEDIATE`` (``Database.begin_write``) makes the whole transaction the only
   writer, so the read in 2 cannot go stale.
4. Take the lowest free port in the Mini's range and insert the claw row (``provisioning``).
   UNIQUE(mini_id, mini_port) and UNIQUE(org, slug) back this up; an IntegrityError is retried.

Every later state change is a conditional update (``WHERE status = old``): when two nodes race
for one claw, exactly one of them sees ``rowcount == 1`` and acts. ``Stopwatch`` tells a caller's
progress callback how far a provision has come.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.crypto import Keyring
from core.db import Database
from core.errors import InputError, StorageError
from core.minis import Mini, mini_from_row, with_usage
from core.tables import claws, mac_minis, utcnow

log = logging.getLogger("clawops.claws")
MAX_ATTEMPTS = 100
Progress = Callable[[str], Awaitable[None]]


class Stopwatch:
    """Tells ``progress`` (if any) each step of a provision with the seconds since it began. A
    progress that fails is logged: it never stops a provision half-way."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress, self.started = progress, time.monotonic()

    async def __call__(self, step: str) -> None:
        if self.progress is None:
            return
        try:
            await self.progress(f"{step} · {time.monotonic() - self.started:.0f} s")
        except Exception:
            log.exception("provision: reporting %r failed", step)


class NoCapacity(InputError):
    """No online Mini has a free slot; nothing was written."""


@dataclass(frozen=True)
class Reservation:
    claw_id: int
    mini: Mini
    port: int


class _Blocked(Exception):
    def __init__(self, mini_id: int) -> None:
        super().__init__(mini_id)
        self.mini_id = mini_id


def token_context(org: str, slug: str) -> str:
    return f"claw:{org}/{slug}"


async def reserve(
    db: Database,
    org: str,
    slug: str,
    created_by: int | None,
    sealed_token: str,
    *,
    restore_after: datetime | None = None,
) -> Reservation:
    """Place a new claw; with ``restore_after``, place the existing ``deleted`` row of
    (org, slug) again instead (only if it was deleted after that time), keeping its id (so its
    bucket and agent id), ``deleted_at`` (the restore's rollback goes back to it) and steps
    ``["reserved"]``. A racing restore of the same row: one wins, the other is refused."""
    block_on: int | None = None
    for _attempt in range(MAX_ATTEMPTS):
        try:
            async with db.begin_write() as conn:
                found = (
                    await conn.execute(
                        select(claws.c.id, claws.c.status, claws.c.deleted_at).where(
                            claws.c.org == org, claws.c.slug == slug
                        )
                    )
                ).first()
                if restore_after is None and found is not None:
                    hint = (
                        "; /claw restore it" if found.status == "deleted" else "; delete it first"
                    )
                    raise InputError(f"claw {org}/{slug} exists ({found.status}){hint}")
                if restore_after is not None:
                    _check_restorable(org, slug, found, restore_after)
                mini, ports = await _choose(conn, db.dialect == "postgresql", block_on)
                port = next(p for p in range(mini.port_low, mini.port_high + 1) if p not in ports)
                now = utcnow()
                placed: dict[str, Any] = {
                    "status": "provisioning",
                    "mini_id": mini.id,
                    "mini_port": port,
                    "gateway_token_sealed": sealed_token,
                    "steps": json.dumps(["reserved"]),
                    "error": "",
                    "updated_at": now,
                }
                if restore_after is not None:
                    assert found is not None
                    result = await conn.execute(
                        update(claws)
                        .where(
                            claws.c.id == found.id,
                            claws.c.status == "deleted",
                            claws.c.deleted_at > restore_after,
                        )
                        .values(
                            **placed,
                            # its gateway is a new one: what was seen of the old one is gone
                            gateway_state=None,
                            gateway_restarts=0,
                            gateway_error="",
                            gateway_since=None,
                            checked_at=None,
                        )
                    )
                    if result.rowcount != 1:
                        raise InputError(f"{org}/{slug} changed meanwhile (restored elsewhere?)")
                    return Reservation(int(found.id), mini, port)
                result = await conn.execute(
                    insert(claws).values(
                        org=org, slug=slug, created_by=created_by, created_at=now, **placed
                    )
                )
                key = result.inserted_primary_key
                assert key is not None
                claw_id = int(key[0])
                return Reservation(claw_id, mini, port)
        except _Blocked as blocked:
            block_on = blocked.mini_id
        except StorageError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
            block_on = None  # a racing insert won: look again (a duplicate slug is refused)
    raise StorageError(f"could not reserve a port for {org}/{slug} after {MAX_ATTEMPTS} tries")


def _check_restorable(org: str, slug: str, found: Any, restore_after: datetime) -> None:
    if found is None:
        raise InputError(f"no claw {org}/{slug}")
    if found.status != "deleted":
        raise InputError(f"{org}/{slug} is {found.status}, not deleted: nothing to restore")
    if found.deleted_at is None or found.deleted_at <= restore_after:
        raise InputError(f"{org}/{slug} was deleted past the retention: it cannot be restored")


async def _choose(
    conn: AsyncConnection, postgres: bool, block_on: int | None
) -> tuple[Mini, set[int]]:
    """A Mini with room and the ports it holds (see the module docstring, steps 2-3)."""
    if postgres and block_on is not None:
        found = await _lock_with_room(conn, block_on, skip_locked=False)
        if found is not None:
            return found
    candidates = [m for m in await _online_minis(conn) if m.used < m.capacity]
    if not candidates:
        raise NoCapacity("no Mini has capacity for another claw (all full, draining or offline)")
    if not postgres:
        return candidates[0], await _ports(conn, candidates[0].id)
    for mini in candidates:
        found = await _lock_with_room(conn, mini.id, skip_locked=True)
        if found is not None:
            return found
    raise _Blocked(candidates[0].id)


async def _lock_with_room(
    conn: AsyncConnection, mini_id: int, *, skip_locked: bool
) -> tuple[Mini, set[int]] | None:
    query = (
        select(mac_minis)
        .where(mac_minis.c.id == mini_id, mac_minis.c.status == "online", mac_minis.c.reachable)
        .with_for_update(skip_locked=skip_locked)
    )
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    ports = await _ports(conn, mini_id)  # a fresh snapshot: taken after the lock was granted
    mini = mini_from_row(row, len(ports))
    free = mini.port_high - mini.port_low + 1 - len(ports)
    return (mini, ports) if mini.used < mini.capacity and free > 0 else None


async def _online_minis(conn: AsyncConnection) -> list[Mini]:
    query = (
        with_usage()
        .where(mac_minis.c.status == "online", mac_minis.c.reachable)
        .order_by("used", mac_minis.c.id)
    )
    return [mini_from_row(row, int(row.used)) for row in (await conn.execute(query)).all()]


async def _ports(conn: AsyncConnection, mini_id: int) -> set[int]:
    query = select(claws.c.mini_port).where(claws.c.mini_id == mini_id)
    return {int(p) for p in (await conn.execute(query)).scalars() if p is not None}


async def transition(db: Database, claw_id: int, old: str, **values: Any) -> bool:
    """``UPDATE claws SET values WHERE id AND status = old``; False when someone else moved it."""
    if "steps" in values and not isinstance(values["steps"], str):
        values["steps"] = json.dumps(values["steps"])
    async with db.begin() as conn:
        result = await conn.execute(
            update(claws)
            .where(claws.c.id == claw_id, claws.c.status == old)
            .values(updated_at=utcnow(), **values)
        )
    return result.rowcount == 1


async def rotate_secrets(db: Database, keyring: Keyring) -> int:
    """Re-seal every gateway token and stored agent token not under the current key.

    Each row is rewritten with a conditional update on its old ciphertext, so a row changed
    meanwhile is left alone (and picked up by the next run). Returns the number of rows changed.
    """
    changed = 0
    async with db.connect() as conn:
        claw_rows = (
            await conn.execute(
                select(claws.c.id, claws.c.org, claws.c.slug, claws.c.gateway_token_sealed)
            )
        ).all()
        mini_rows = (
            await conn.execute(
                select(mac_minis.c.id, mac_minis.c.hostname, mac_minis.c.agent_token_sealed)
            )
        ).all()
    jobs: list[tuple[Any, int, str, str]] = [
        (claws, r.id, r.gateway_token_sealed, token_context(r.org, r.slug))
        for r in claw_rows
        if r.gateway_token_sealed
    ]
    jobs += [
        (mac_minis, r.id, r.agent_token_sealed, f"mini:{r.hostname}")
        for r in mini_rows
        if r.agent_token_sealed
    ]
    for table, row_id, sealed, context in jobs:
        if not keyring.needs_rotation(sealed):
            continue
        fresh = keyring.seal(keyring.open(sealed, context), context)
        column = "gateway_token_sealed" if table is claws else "agent_token_sealed"
        async with db.begin() as conn:
            result = await conn.execute(
                update(table)
                .where(table.c.id == row_id, table.c[column] == sealed)
                .values({column: fresh})
            )
        changed += result.rowcount
    return changed
