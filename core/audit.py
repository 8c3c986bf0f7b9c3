"""The audit log: every command that ran (or was refused, ignored or cancelled) is a row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, insert, select

from core.db import Database
from core.tables import audit_log, utcnow

Outcome = Literal["ok", "error", "denied", "ignored", "cancelled", "expired", "confirming"]


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    user_id: int | None
    username: str | None
    chat_id: int | None
    command: str
    args: str
    outcome: str
    duration_ms: int
    detail: str


class AuditLog:
    def __init__(self, db: Database, node: str) -> None:
        self.db = db
        self.node = node

    async def record(
        self,
        *,
        command: str,
        outcome: Outcome,
        user_id: int | None = None,
        username: str | None = None,
        chat_id: int | None = None,
        args: str = "",
        duration_ms: int = 0,
        detail: str = "",
    ) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                insert(audit_log).values(
                    at=utcnow(),
                    node=self.node,
                    user_id=user_id,
                    username=username,
                    chat_id=chat_id,
                    command=command[:64],
                    args=args[:4000],
                    outcome=outcome,
                    duration_ms=duration_ms,
                    detail=detail[:4000],
                )
            )

    async def recent(self, limit: int = 50, outcome: str | None = None) -> list[AuditEntry]:
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if outcome is not None:
            query = query.where(audit_log.c.outcome == outcome)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AuditEntry(
                r.at, r.user_id, r.username, r.chat_id, r.command, r.args, r.outcome,
                r.duration_ms, r.detail,
            )
            for r in rows
        ]  # fmt: skip

    async def count(self, outcome: str) -> int:
        query = select(func.count()).select_from(audit_log).where(audit_log.c.outcome == outcome)
        async with self.db.connect() as conn:
            return int((await conn.execute(query)).scalar_one())
