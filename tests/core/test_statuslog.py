from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from core.db import Database
from core.errors import InputError, StorageError
from core.statuslog import StatusLog
from core.tables import status_log


@pytest.fixture
async def statuslog(db: Database):
    log = StatusLog(db, "test-node")
    await log.start()
    try:
        yield log
    finally:
        await log.stop()


async def count(db: Database) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(status_log))).scalar_one())


async def test_an_appended_entry_is_stored_and_read_back_newest_first(statuslog, db):
    first = await statuslog.append("cleaner", "ok", "Cleaned 5 orphans")
    second = await statuslog.append("healer", "warning", "swap 81%")
    assert second.id > first.id
    recent = await statuslog.recent()
    assert [e.id for e in recent] == [second.id, first.id]
    assert recent[1].message == "Cleaned 5 orphans" and recent[1].node == "test-node"
    assert [e.job_id for e in await statuslog.recent(job_id="healer")] == ["healer"]
    assert [e.status for e in await statuslog.recent(status="ok")] == ["ok"]


@pytest.mark.parametrize(
    ("job", "status", "message"),
    [("", "ok", "m"), ("  ", "ok", "m"), ("x" * 129, "ok", "m"), (5, "ok", "m"),
     ("job", "fine", "m"), ("job", "ok", None), ("job", "ok", ["m"]), ("a\nb", "ok", "m")],
)  # fmt: skip
async def test_a_bad_entry_is_refused_and_nothing_is_stored(statuslog, db, job, status, message):
    with pytest.raises(InputError):
        await statuslog.append(job, status, message)
    assert await count(db) == 0


async def test_concurrent_appends_are_group_committed_and_none_is_lost(statuslog, db):
    async def poster(n: int) -> list[int]:
        return [(await statuslog.append(f"job-{n}", "ok", f"{n}:{i}")).id for i in range(40)]

    results = await asyncio.gather(*(poster(n) for n in range(25)))
    ids = [i for r in results for i in r]
    assert len(set(ids)) == 1000
    assert await count(db) == 1000


async def test_latest_per_job_is_the_newest_entry_of_each(statuslog):
    await statuslog.append("a", "ok", "old")
    await statuslog.append("b", "critical", "down")
    await statuslog.append("a", "warning", "new")
    latest = {e.job_id: e.message for e in await statuslog.latest_per_job()}
    assert latest == {"a": "new", "b": "down"}


async def test_a_failed_commit_answers_every_waiting_caller_with_an_error(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/never-migrated.db")
    log = StatusLog(db, "n")
    await log.start()
    try:
        results = await asyncio.gather(
            *(log.append("j", "ok", str(i)) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, StorageError) for r in results), results
    finally:
        await log.stop()
        await db.close()
