"""The database: one async engine for SQLite (aiosqlite, WAL) or PostgreSQL (psycopg 3).

SQLite is opened in WAL mode with ``synchronous=FULL``: a transaction that has committed is on
disk, so a 201 answered after the commit survives ``kill -9`` and a power cut alike. Several
processes may write one SQLite file (the busy timeout makes them wait for each other); nothing
here assumes it is the only writer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, event, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from core.errors import StorageError

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same on every node sharing one PostgreSQL.
_MIGRATION_LOCK = 7_461_001


class Database:
    """An engine plus the few operations every caller needs (begin, connect, upgrade, close)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        parsed = make_url(url)
        self.url = url
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: AsyncEngine = create_async_engine(
                url, echo=echo, connect_args={"timeout": 30}
            )
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_async_engine(url, echo=echo, pool_pre_ping=True, pool_size=10)

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for logs."""
        return make_url(self.url).render_as_string(hide_password=True)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed on success; driver errors -> StorageError."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(_short(exc)) from exc
        except OSError as exc:
            raise StorageError(f"database unreachable: {exc}") from exc

    @asynccontextmanager
    async def begin_write(self) -> AsyncIterator[AsyncConnection]:
        """``begin()`` holding the write lock from the first statement, for read-then-write.

        On SQLite this is ``BEGIN IMMEDIATE``: writers queue at the start (busy timeout), so
        what the transaction reads cannot go stale before it writes. On PostgreSQL it is plain
        ``begin()``: lock the rows you decide on with ``SELECT ... FOR UPDATE``.
        """
        async with self.begin() as conn:
            if self.dialect == "sqlite":
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (autobegin; nothing is committed)."""
        try:
            async with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(_short(exc)) from exc
        except OSError as exc:
            raise StorageError(f"database unreachable: {exc}") from exc

    async def upgrade(self, revision: str = "head") -> None:
        """Apply the alembic migrations up to ``revision`` (safe to run from two nodes at once)."""
        async with self.begin() as conn:
            await conn.run_sync(_upgrade, revision)

    async def revision(self) -> str | None:
        """The revision the database is at, or None before the first migration."""
        async with self.connect() as conn:
            return await conn.run_sync(_current_revision)

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA busy_timeout=30000",
            "PRAGMA foreign_keys=ON",
        ):
            cursor.execute(pragma)
    finally:
        cursor.close()


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _upgrade(conn: Connection, revision: str) -> None:
    if conn.dialect.name == "postgresql":
        # Two nodes starting at once: the second waits here, then finds nothing to do.
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


def _current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _short(exc: SQLAlchemyError) -> str:
    """The driver's message without SQLAlchemy's statement dump and help link."""
    orig = getattr(exc, "orig", None)
    message = str(orig if orig is not None else exc).strip().splitlines()
    return f"database error: {message[0] if message else type(exc).__name__}"
