from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, inspect, select, text

from bot.node import head_revision
from core.db import Database, DatabaseProbe
from core.errors import DatabaseUnavailable, StorageError
from core.tables import alert_states, job_runs, metadata
from tests.auxil.tcpproxy import TcpProxy, through
from tests.conftest import fresh_pg_database


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


# -- a database that stops answering (issue 11) ---------------------------------------------

SILENT_TIMEOUT = 1.0
# Generous: the bound is the timeout; the margin absorbs a loaded 2-core machine.
WITHIN = SILENT_TIMEOUT + 3


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    running = TcpProxy("127.0.0.1", 5432)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def silenceable(pg_url: str, proxy: TcpProxy) -> AsyncIterator[Database]:
    """A migrated PostgreSQL reached through ``proxy``, with a 1 s timeout."""
    direct = Database(pg_url)
    await direct.upgrade()
    await direct.close()
    database = Database(through(pg_url, proxy), timeout=SILENT_TIMEOUT)
    yield database
    proxy.resume()
    await database.close()


async def timed(call: Awaitable[object]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        await call
    except Exception as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


async def insert_run(database: Database, job: str) -> None:
    async with database.begin() as conn:
        await conn.execute(
            insert(job_runs).values(job=job, node="n", started_at=datetime.now(UTC), outcome="ok")
        )


async def test_a_silent_postgres_makes_every_call_fail_within_the_timeout(silenceable, proxy):
    await silenceable.ping()  # a pooled connection, then the link goes quiet under it
    proxy.silence()
    for call in (silenceable.ping(), insert_run(silenceable, "silent"), silenceable.revision()):
        error, took = await timed(call)
        assert isinstance(error, DatabaseUnavailable), error
        assert str(error) == "database unavailable: no answer within 1s"
        assert took < WITHIN


async def test_more_callers_than_the_pool_holds_all_fail_within_the_timeout(silenceable, proxy):
    proxy.silence()
    started = time.monotonic()
    results = await asyncio.gather(*(silenceable.ping() for _ in range(25)), return_exceptions=True)
    assert all(isinstance(r, DatabaseUnavailable) for r in results), results
    assert time.monotonic() - started < WITHIN


async def test_after_the_link_comes_back_the_same_database_works_and_nothing_leaked(
    silenceable, proxy
):
    await silenceable.ping()
    proxy.silence()
    await asyncio.gather(*(silenceable.ping() for _ in range(5)), return_exceptions=True)
    proxy.resume()
    await insert_run(silenceable, "after")
    async with silenceable.connect() as conn:
        jobs = (await conn.execute(select(job_runs.c.job))).scalars().all()
    assert "after" in jobs
    assert silenceable.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_cancelled_caller_is_cancelled_not_told_the_database_is_unavailable(
    silenceable, proxy
):
    await silenceable.ping()
    proxy.silence()
    task = asyncio.create_task(silenceable.ping())
    await proxy.swallowed.wait()  # its query went into the silent link
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_postgres_sessions_carry_the_statement_timeout(silenceable):
    async with silenceable.connect() as conn:
        value = (await conn.exec_driver_sql("SHOW statement_timeout")).scalar_one()
    assert value == "1s"


async def test_a_statement_longer_than_the_timeout_is_ended(silenceable):
    error, took = await timed(insert_slow(silenceable))
    assert isinstance(error, DatabaseUnavailable), error
    assert took < WITHIN


async def insert_slow(database: Database) -> None:
    async with database.connect() as conn:
        await conn.exec_driver_sql("SELECT pg_sleep(5)")


async def test_a_sqlite_write_lock_held_elsewhere_fails_after_the_busy_timeout(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/locked.db"
    holder, waiter = Database(url), Database(url, timeout=0.5)
    try:
        await holder.upgrade()
        async with holder.begin_write():
            error, took = await timed(insert_run(waiter, "blocked"))
        assert isinstance(error, StorageError) and "database unavailable" in str(error), error
        assert took < 0.5 + 3
        await insert_run(waiter, "later")  # the lock is gone: it works again
    finally:
        await holder.close()
        await waiter.close()


async def test_the_probe_reports_a_silent_database_and_recovers_without_a_restart(
    silenceable, proxy
):
    probe = DatabaseProbe(silenceable, max_age=0)
    assert await probe.problem() is None
    proxy.silence()
    started = time.monotonic()
    problems = await asyncio.gather(*(probe.problem() for _ in range(50)))
    assert set(problems) == {"database unavailable: no answer within 1s"}
    assert time.monotonic() - started < WITHIN  # one shared round-trip, not 50 in a row
    proxy.resume()
    assert await probe.problem() is None


async def test_the_probe_reuses_its_answer_for_max_age(silenceable, proxy):
    probe = DatabaseProbe(silenceable, max_age=60)
    assert await probe.problem() is None
    proxy.silence()
    assert await probe.problem() is None  # cached: no round-trip to hang on


def test_a_timeout_that_is_not_positive_is_refused():
    with pytest.raises(ValueError, match="positive"):
        Database("sqlite+aiosqlite://", timeout=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A database with no tables yet, on each backend (PostgreSQL: made for this test)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'blank.db'}"
        return
    with fresh_pg_database("clawops_blank") as url:
        yield url


async def test_keys_down_before_the_alert_follow_ups_migration_count_as_announced(blank_url):
    db = Database(blank_url)
    try:
        await db.upgrade("0006")
        async with db.begin() as conn:
            for key, state in (("machine:mini", "down"), ("job:rnd", "up")):
                await conn.execute(
                    text(
                        "INSERT INTO alert_states (key, state, failures, successes, changed_at,"
                        " last_message) VALUES (:key, :state, 0, 0, :at, '')"
                    ),
                    {"key": key, "state": state, "at": datetime.now(UTC).isoformat()},
                )
        await db.upgrade()
        async with db.connect() as conn:
            rows = (await conn.execute(select(alert_states))).all()
        assert {r.key: (r.announced, r.held, r.reminded_at) for r in rows} == {
            "machine:mini": ("down", False, None),
            "job:rnd": ("up", False, None),
        }
    finally:
        await db.close()
