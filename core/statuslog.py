"""The status log: what cron jobs and bots report through ``POST /api/log``.

Writes go through one writer task that commits in groups ("group commit"): every entry waiting
when a commit starts goes into that one transaction, and each caller is answered only after the
commit has returned. So an id handed out is always durable, and the cost of a commit (an fsync on
SQLite) is shared by everyone who was waiting for it instead of being paid once per entry.

A caller waits at most the database's timeout. If its entry is still queued then (the writer is
stuck on a database that does not answer), the entry is dropped and the caller told it was not
stored; if a commit holding it is already under way, the caller is told the outcome is unknown
(that commit itself ends within the timeout). Either way, nothing answered with an id is lost,
and nothing answered "not stored" turns up later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast, get_args

from sqlalchemy import func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import Database, translate
from core.errors import DatabaseUnavailable, InputError, StorageError
from core.tables import status_log, utcnow

log = logging.getLogger(__name__)

Status = Literal["ok", "warning", "critical"]
STATUSES: tuple[str, ...] = get_args(Status)
MAX_JOB_ID = 128
MAX_MESSAGE = 16 * 1024


@dataclass(frozen=True)
class Entry:
    id: int
    job_id: str
    status: Status
    message: str
    created_at: datetime
    node: str

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "jobId": self.job_id,
            "status": self.status,
            "message": self.message,
            "createdAt": self.created_at.isoformat(),
            "node": self.node,
        }


def validate(job_id: object, status: object, message: object) -> tuple[str, Status, str]:
    """Check one entry's fields; raise InputError saying which field is wrong and why."""
    if not isinstance(job_id, str) or not job_id.strip():
        raise InputError("jobId must be a non-empty string")
    if len(job_id) > MAX_JOB_ID:
        raise InputError(f"jobId is longer than {MAX_JOB_ID} characters")
    if any(ord(c) < 32 for c in job_id):
        raise InputError("jobId must not contain control characters")
    if not isinstance(status, str) or status not in STATUSES:
        raise InputError(f"status must be one of {', '.join(STATUSES)}")
    if not isinstance(message, str):
        raise InputError("message must be a string")
    if len(message) > MAX_MESSAGE:
        raise InputError(f"message is longer than {MAX_MESSAGE} characters")
    return job_id, cast(Status, status), message


@dataclass
class _Pending:
    job_id: str
    status: Status
    message: str
    created_at: datetime
    done: asyncio.Future[int]
    # Set by the writer when the entry goes into a commit; a caller that gave up before that
    # marks it abandoned and the writer skips it.
    claimed: bool = False
    abandoned: bool = False


class StatusLog:
    """Appends (group-committed) and queries of the status log."""

    def __init__(self, db: Database, node: str, *, max_batch: int = 512) -> None:
        self.db = db
        self.node = node
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        # The writer keeps one connection: no pool checkout, reset and checkin per batch.
        self._conn: AsyncConnection | None = None

    async def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="statuslog-writer")

    async def stop(self) -> None:
        """Finish what is queued (callers get their ids), then stop the writer."""
        if self._writer is None:
            return
        await self._queue.join()
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._writer = None

    async def append(self, job_id: object, status: object, message: object) -> Entry:
        """Validate and store one entry; return it once it is committed."""
        job, stat, text = validate(job_id, status, message)
        if self._writer is None:
            raise StorageError("the status log is not running")
        pending = _Pending(job, stat, text, utcnow(), asyncio.get_running_loop().create_future())
        # Its caller may have given up by the time it is answered: the answer is then dropped.
        pending.done.add_done_callback(_retrieved)
        await self._queue.put(pending)
        # If this caller goes away, its entry is still written; the writer skips the answer.
        # (asyncio.wait never cancels what it waits for, and costs one timer: no shield.)
        answered, _ = await asyncio.wait((pending.done,), timeout=self.db.timeout)
        if not answered:
            waited = f"no answer within {self.db.timeout:g}s"
            if pending.claimed:
                raise DatabaseUnavailable(
                    f"{waited}; its commit was under way, so the entry may have been stored"
                ) from None
            pending.abandoned = True
            raise DatabaseUnavailable(f"{waited}; the entry was not stored") from None
        entry_id = pending.done.result()
        return Entry(entry_id, job, stat, text, pending.created_at, self.node)

    async def _write_loop(self) -> None:
        try:
            await self._write_batches()
        finally:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

    async def _write_batches(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            dropped = [p for p in batch if p.abandoned]
            batch = [p for p in batch if not p.abandoned]
            for _ in dropped:
                self._queue.task_done()
            if not batch:
                continue
            for item in batch:
                item.claimed = True
            try:
                ids = await self._commit(batch)
            except (StorageError, OSError) as exc:
                # Nothing of this batch is stored (the transaction rolled back): tell each caller.
                log.warning("status log write of %d entries failed: %s", len(batch), exc)
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(_copy(exc))
            else:
                for item, entry_id in zip(batch, ids, strict=True):
                    if not item.done.done():
                        item.done.set_result(entry_id)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[_Pending]) -> list[int]:
        rows = [
            {
                "job_id": p.job_id,
                "status": p.status,
                "message": p.message,
                "created_at": p.created_at,
                "node": self.node,
            }
            for p in batch
        ]
        sqlite = self.db.dialect == "sqlite"
        # Under SQLite's write lock each new rowid is the largest so far plus one, so the ids
        # come in parameter order once sorted; SQLAlchemy's sort_by_parameter_order would
        # insert row by row there, six times slower. PostgreSQL sorts cheaply.
        stmt = insert(status_log).returning(status_log.c.id, sort_by_parameter_order=not sqlite)
        try:
            async with self.db.bounded():
                if self._conn is None or self._conn.closed or self._conn.invalidated:
                    self._conn = await self.db.engine.connect()
                async with self._conn.begin():
                    ids = [int(row.id) for row in await self._conn.execute(stmt, rows)]
        except (SQLAlchemyError, StorageError) as exc:
            if self._conn is not None:
                # An invalidated connection closes at once; it never goes back to the pool.
                await self._conn.close()
                self._conn = None
            raise (translate(exc) if isinstance(exc, SQLAlchemyError) else exc) from exc
        return sorted(ids) if sqlite else ids

    async def recent(
        self, *, job_id: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[Entry]:
        """Newest first, optionally filtered by job and status."""
        query = select(status_log).order_by(status_log.c.id.desc()).limit(limit)
        if job_id is not None:
            query = query.where(status_log.c.job_id == job_id)
        if status is not None:
            query = query.where(status_log.c.status == status)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Entry(r.id, r.job_id, r.status, r.message, r.created_at, r.node) for r in rows]

    async def latest_per_job(self) -> list[Entry]:
        """The newest entry of every job id (for /status and /api/status)."""
        newest = select(func.max(status_log.c.id)).group_by(status_log.c.job_id)
        query = (
            select(status_log)
            .where(status_log.c.id.in_(newest.scalar_subquery()))
            .order_by(status_log.c.job_id)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Entry(r.id, r.job_id, r.status, r.message, r.created_at, r.node) for r in rows]


def _copy(exc: StorageError | OSError) -> StorageError:
    """One exception per waiting caller (each gets its own traceback), of the same kind."""
    if isinstance(exc, DatabaseUnavailable):
        return DatabaseUnavailable(exc.reason)
    if isinstance(exc, OSError):
        return DatabaseUnavailable(str(exc) or type(exc).__name__)
    return StorageError(str(exc))


def _retrieved(done: asyncio.Future[int]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: asyncio need not warn that nobody read it
