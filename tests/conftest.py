"""Shared fixtures: one ``db`` fixture yields each real backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from core.buckets import S3Settings
from core.db import Database
from core.tables import metadata


def _dump_tasks(_signum: int, _frame: object) -> None:
    """``kill -USR1 <pytest pid>``: every asyncio task's stack into
    ``$TMPDIR/pytest-tasks-<pid>.txt`` (a hung test says where it waits, which a thread dump
    cannot show: the loop's thread only waits in select; pytest captures stderr)."""
    path = Path(tempfile.gettempdir()) / f"pytest-tasks-{os.getpid()}.txt"
    loop = asyncio.events._get_running_loop()
    with path.open("w") as out:
        if loop is None:
            out.write("no running event loop\n")
            return
        for task in asyncio.all_tasks(loop):
            out.write(f"--- {task!r}\n")
            task.print_stack(file=out)


signal.signal(signal.SIGUSR1, _dump_tasks)

PM2_BIN = Path(__file__).resolve().parents[1] / ".tools" / "node_modules" / ".bin"
PG_ADMIN = os.environ.get("CLAWOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def fresh_pg_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (its SQLAlchemy URL), dropped afterwards; the test is
    skipped when no PostgreSQL answers at ``PG_ADMIN``."""
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN} (set CLAWOPS_TEST_PG): {exc}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        try:
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    with fresh_pg_database("clawops_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty, migrated-or-not database on each backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'clawops.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """A migrated database with every table empty."""
    database = Database(db_url)
    await database.upgrade()
    if database.dialect == "postgresql":
        tables = ", ".join(t.name for t in metadata.sorted_tables)
        async with database.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture(scope="session")
def s3_url() -> Iterator[str]:
    """An S3-compatible server on loopback (moto's server mode), for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> S3Settings:
    """Settings for the moto server; credentials also in CLAWOPS_TEST_S3_KEY/_SECRET."""
    monkeypatch.setenv("CLAWOPS_TEST_S3_KEY", "testing")
    monkeypatch.setenv("CLAWOPS_TEST_S3_SECRET", "testing")
    return S3Settings(s3_url, "testing", "testing", "us-east-1")


@pytest.fixture
async def pm2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Path]:
    """A real PM2 (from npm, in .tools/) with its own PM2_HOME, running one small node app
    named ``aphos-server-dev``; PM2 is killed afterwards. Tests using it mark ``needs_pm2``."""
    from core.config import MachineConfig
    from core.executors import LocalExecutor

    monkeypatch.setenv("PM2_HOME", str(tmp_path / "pm2home"))
    monkeypatch.setenv("PATH", f"{PM2_BIN}:{os.environ['PATH']}")
    app = tmp_path / "server.js"
    app.write_text(
        "console.log('aphos listening');\n"
        "require('http').createServer((q, s) => s.end('ok')).listen(0);\n"
    )
    executor = LocalExecutor(
        MachineConfig(name="here", os="linux", address="127.0.0.1", local=True)
    )
    result = await executor.run(
        ["pm2", "start", str(app), "--name", "aphos-server-dev"], timeout=60
    )
    assert result.ok, result.stderr
    yield app
    await executor.run(["pm2", "kill"], timeout=60)
