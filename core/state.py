"""Shared node state: small JSON values by key, seen by every node sharing the database.

Used for what must survive a restart and is decided across nodes: the failover state, the
healer's back-off per service, emergency mode. ``put`` overwrites; ``claim`` changes a value only
if nobody changed it since it was read (a conditional update on ``version``, Healthchecks-style):
``False`` means another node got there first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update

from core.db import Database
from core.errors import StorageError
from core.tables import node_state, utcnow


@dataclass(frozen=True)
class Versioned:
    value: dict[str, Any]
    version: int


class StateStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, key: str) -> dict[str, Any] | None:
        found = await self.read(key)
        return found.value if found is not None else None

    async def read(self, key: str) -> Versioned | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(
                select(node_state.c.value, node_state.c.version).where(node_state.c.key == key)
            )).first()  # fmt: skip
        if row is None:
            return None
        value = json.loads(row.value)
        return Versioned(value if isinstance(value, dict) else {}, int(row.version))

    async def put(self, key: str, value: dict[str, Any]) -> None:
        """Write ``value`` whatever was there (last writer wins)."""
        for _ in range(5):
            current = await self.read(key)
            if await self.claim(key, value, current.version if current else None):
                return
        raise StorageError(f"could not write state {key!r}: too much contention")

    async def claim(self, key: str, value: dict[str, Any], seen: int | None) -> bool:
        """Write ``value`` only if the key is still at version ``seen`` (None: still absent)."""
        text = json.dumps(value, default=str)
        now = utcnow()
        try:
            async with self.db.begin() as conn:
                if seen is None:
                    await conn.execute(
                        insert(node_state).values(key=key, value=text, version=1, updated_at=now)
                    )
                    return True
                result = await conn.execute(
                    update(node_state)
                    .where(node_state.c.key == key, node_state.c.version == seen)
                    .values(value=text, version=seen + 1, updated_at=now)
                )
                return result.rowcount == 1
        except StorageError:
            if seen is None:
                return False  # a concurrent first insert of the same key won
            raise

    async def delete(self, key: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(delete(node_state).where(node_state.c.key == key))
