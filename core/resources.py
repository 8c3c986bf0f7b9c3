"""Shared resource queues (SPEC 7b): leases on a ``[[resources]]`` slot, held in the database.

A holder enqueues (a ``waiting`` row), then polls ``try_acquire`` until it holds a slot, heartbeats
while it works and releases when done. Every row has ``expires_at``: a holder (or waiter) that
stops heartbeating for the resource's TTL counts for nothing, and ``reclaim_expired`` deletes it.

Fairness is FIFO: a waiter takes a slot only while it is among the first
``max_concurrent - held`` live waiters in queue order (by id). Acquiring is one conditional
UPDATE, never read-then-write; it runs under SQLite's write lock (``BEGIN IMMEDIATE``) or, on
PostgreSQL, after a transaction-level advisory lock on the resource, so two nodes can never both
take the last slot (the subqueries of two concurrent READ COMMITTED updates would not see each
other's rows otherwise).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.config import ResourceConfig
from core.db import Database
from core.errors import InputError
from core.errors import NotFound as NotFound  # re-exported: callers import it from here
from core.tables import leases, utcnow

MAX_HOLDER = 128


@dataclass(frozen=True)
class Lease:
    lease: str
    resource: str
    holder: str
    state: str  # waiting | held
    queued_at: datetime
    acquired_at: datetime | None
    heartbeat_at: datetime
    expires_at: datetime

    def as_json(self, now: datetime | None = None) -> dict[str, object]:
        now = now or utcnow()
        since = self.acquired_at or self.queued_at
        return {
            "lease": self.lease, "resource": self.resource, "holder": self.holder,
            "state": self.state, "since": since.isoformat(),
            "ageSeconds": round((now - since).total_seconds(), 1),
            "expiresAt": self.expires_at.isoformat(),
        }  # fmt: skip


@dataclass(frozen=True)
class Poll:
    held: bool
    place: int  # 0 when held, else 1 for the next waiter in line
    expires_at: datetime


def _lease(row: object) -> Lease:
    return Lease(**{name: getattr(row, name) for name in Lease.__dataclass_fields__})


class Leases:
    def __init__(self, db: Database, resources: Iterable[ResourceConfig]) -> None:
        self.db = db
        self.resources = {r.name: r for r in resources}

    def resource(self, name: str) -> ResourceConfig:
        found = self.resources.get(name)
        if found is None:
            known = ", ".join(sorted(self.resources)) or "none configured"
            raise NotFound(f"unknown resource {name!r} (known: {known})")
        return found

    def _ttl(self, resource: str) -> timedelta:
        found = self.resources.get(resource)
        return found.lease_ttl if found is not None else timedelta(seconds=60)

    async def _lock(self, conn: AsyncConnection, resource: str) -> None:
        if self.db.dialect == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:r))"), {"r": f"lease:{resource}"}
            )

    async def _row(self, conn: AsyncConnection, lease: str) -> Lease:
        row = (await conn.execute(select(leases).where(leases.c.lease == lease))).first()
        if row is None or row.expires_at <= utcnow():
            raise NotFound(f"lease {lease!r} is gone (released, or expired after its TTL)")
        return _lease(row)

    async def enqueue(self, resource: str, holder: str) -> Lease:
        """Join the queue of ``resource`` as ``holder``; the lease is waiting until acquired."""
        config = self.resource(resource)
        holder = holder.strip()
        if not holder or len(holder) > MAX_HOLDER or not holder.isprintable():
            raise InputError(f"'who' must be 1-{MAX_HOLDER} printable characters")
        now = utcnow()
        values = dict(
            lease=secrets.token_hex(8), resource=resource, holder=holder, state="waiting",
            queued_at=now, acquired_at=None, heartbeat_at=now,
            expires_at=now + config.lease_ttl,
        )  # fmt: skip
        async with self.db.begin() as conn:
            await conn.execute(insert(leases).values(**values))
        return Lease(**values)  # type: ignore[arg-type]

    async def try_acquire(self, lease: str) -> Poll:
        """Take a slot if the lease's turn has come; a poll is also the waiter's heartbeat."""
        async with self.db.begin_write() as conn:
            mine = await self._row(conn, lease)
            await self._lock(conn, mine.resource)
            my_id = (await conn.execute(
                select(leases.c.id).where(leases.c.lease == lease)
            )).scalar_one()  # fmt: skip
            now = utcnow()
            expires = now + self._ttl(mine.resource)
            if mine.state == "held":
                await conn.execute(
                    update(leases).where(leases.c.lease == lease)
                    .values(heartbeat_at=now, expires_at=expires)
                )  # fmt: skip
                return Poll(True, 0, expires)
            config = self.resource(mine.resource)
            held = leases.alias("h")
            ahead = leases.alias("w")
            n_held = (
                select(func.count()).select_from(held)
                .where(held.c.resource == mine.resource, held.c.state == "held",
                       held.c.expires_at > now)
                .scalar_subquery()
            )  # fmt: skip
            n_ahead = (
                select(func.count()).select_from(ahead)
                .where(ahead.c.resource == mine.resource, ahead.c.state == "waiting",
                       ahead.c.expires_at > now, ahead.c.id < my_id)
                .scalar_subquery()
            )  # fmt: skip
            # The one atomic step: held only if the slot is free for it right now.
            taken = await conn.execute(
                update(leases)
                .where(leases.c.lease == lease, leases.c.state == "waiting",
                       leases.c.expires_at > now,
                       n_held + n_ahead < config.max_concurrent)
                .values(state="held", acquired_at=now, heartbeat_at=now, expires_at=expires)
            )  # fmt: skip
            if taken.rowcount == 1:
                return Poll(True, 0, expires)
            await conn.execute(
                update(leases).where(leases.c.lease == lease)
                .values(heartbeat_at=now, expires_at=expires)
            )  # fmt: skip
            place = (await conn.execute(select(n_ahead))).scalar_one()
            return Poll(False, int(place) + 1, expires)

    async def heartbeat(self, lease: str) -> datetime:
        """Extend a live lease by its TTL; an expired or reclaimed one raises NotFound."""
        async with self.db.begin() as conn:
            mine = await self._row(conn, lease)
            now = utcnow()
            expires = now + self._ttl(mine.resource)
            done = await conn.execute(
                update(leases)
                .where(leases.c.lease == lease, leases.c.expires_at > now)
                .values(heartbeat_at=now, expires_at=expires)
            )
            if done.rowcount != 1:
                raise NotFound(f"lease {lease!r} expired before this heartbeat")
        return expires

    async def release(self, lease: str) -> Lease:
        """Give the slot (or the place in the queue) back; NotFound if already gone."""
        async with self.db.begin() as conn:
            row = (await conn.execute(select(leases).where(leases.c.lease == lease))).first()
            if row is None:
                raise NotFound(f"lease {lease!r} is gone (released, or expired after its TTL)")
            await conn.execute(delete(leases).where(leases.c.lease == lease))
        return _lease(row)

    async def get(self, lease: str) -> Lease:
        async with self.db.connect() as conn:
            return await self._row(conn, lease)

    async def reclaim_expired(self) -> list[Lease]:
        """Delete the leases whose holders stopped heartbeating; what was reclaimed."""
        now = utcnow()
        async with self.db.begin() as conn:
            rows = (await conn.execute(
                delete(leases).where(leases.c.expires_at <= now).returning(*leases.c)
            )).all()  # fmt: skip
        return sorted((_lease(r) for r in rows), key=lambda x: x.queued_at)

    async def snapshot(self) -> dict[str, dict[str, object]]:
        """Per configured resource: its limit, live holders and waiters (queue order)."""
        now = utcnow()
        async with self.db.connect() as conn:
            rows = (await conn.execute(
                select(leases).where(leases.c.expires_at > now).order_by(leases.c.id)
            )).all()  # fmt: skip
        found = [_lease(r) for r in rows]
        result: dict[str, dict[str, object]] = {}
        for name, config in sorted(self.resources.items()):
            mine = [x for x in found if x.resource == name]
            result[name] = {
                "maxConcurrent": config.max_concurrent,
                "leaseTtlSeconds": config.lease_ttl.total_seconds(),
                "holders": [x.as_json(now) for x in mine if x.state == "held"],
                "waiters": [x.as_json(now) for x in mine if x.state == "waiting"],
            }
        return result
