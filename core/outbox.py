"""Messages for the alert chat that are not alert flips: stored first, sent by the notifier.

A job's report, a takeover announcement or an emergency notice is written here and sent when
Telegram takes it, so nothing is lost while Telegram is away or this node is not the one talking
to it. Texts are HTML (parse mode of the bot), already escaped by whoever wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update

from core.db import Database
from core.tables import outbox, utcnow


@dataclass(frozen=True)
class Message:
    id: int
    text: str
    created_at: datetime


class Outbox:
    def __init__(self, db: Database, node: str) -> None:
        self.db = db
        self.node = node

    async def put(self, text: str) -> int:
        async with self.db.begin() as conn:
            new_id = (await conn.execute(
                insert(outbox).returning(outbox.c.id).values(
                    node=self.node, text=text, created_at=utcnow()
                )
            )).scalar_one()  # fmt: skip
        return int(new_id)

    async def pending(self, limit: int = 50) -> list[Message]:
        """Messages not sent yet, oldest first."""
        query = select(outbox).where(outbox.c.sent_at.is_(None)).order_by(outbox.c.id).limit(limit)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Message(int(r.id), r.text, r.created_at) for r in rows]

    async def mark_sent(self, message_id: int) -> bool:
        """Claim a message as sent; False if another node had already marked it."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(outbox)
                .where(outbox.c.id == message_id, outbox.c.sent_at.is_(None))
                .values(sent_at=utcnow())
            )
        return result.rowcount == 1
