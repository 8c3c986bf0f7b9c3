from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, inspect, select

from bot.node import head_revision
from core.db import Database
from core.errors import StorageError
from core.tables import job_runs, metadata


async def test_migrations_create_every_table_and_reach_head(db: Database):
    assert await db.revision() == head_revision()
    async with db.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {t.name for t in metadata.sorted_tables} <= names


async def test_upgrading_twice_changes_nothing(db: Database):
    async with db.begin() as conn:
        await conn.execute(
            insert(job_runs).values(
                job="heartbeat", node="n", started_at=datetime.now(UTC), outcome="ok"
            )
        )
    await db.upgrade()
    async with db.connect() as conn:
        rows = (await conn.execute(select(job_runs))).all()
    assert [r.job for r in rows] == ["heartbeat"]


async def test_times_come_back_aware_and_in_utc(db: Database):
    eastern = timezone(timedelta(hours=-5))
    started = datetime(2026, 1, 29, 0, 30, tzinfo=eastern)
    async with db.begin() as conn:
        await conn.execute(
            insert(job_runs).values(job="j", node="n", started_at=started, outcome="ok")
        )
    async with db.connect() as conn:
        value = (await conn.execute(select(job_runs.c.started_at))).scalar_one()
    assert value == started and value.tzinfo is not None and value.utcoffset() == timedelta(0)


async def test_a_naive_time_is_refused_and_nothing_is_stored(db: Database):
    with pytest.raises(StorageError):
        async with db.begin() as conn:
            await conn.execute(
                insert(job_runs).values(job="j", node="n", started_at=datetime.now(), outcome="ok")
            )
    async with db.connect() as conn:
        assert (await conn.execute(select(job_runs))).all() == []


async def test_an_unreachable_postgres_is_a_storage_error():
    database = Database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    try:
        with pytest.raises(StorageError, match="database"):
            await database.upgrade()
    finally:
        await database.close()


async def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    try:
        await database.upgrade()
        async with database.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
            sync = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar_one()
        assert (mode, sync) == ("wal", 2)
    finally:
        await database.close()


async def test_the_migrations_build_exactly_the_schema_the_code_declares(db: Database):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from core.tables import metadata

    def diff(conn):
        return compare_metadata(MigrationContext.configure(conn), metadata)

    async with db.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []
