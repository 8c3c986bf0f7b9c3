"""The database: one async engine for SQLite (aiosqlite, WAL) or PostgreSQL (psycopg 3).

SQLite is opened in WAL mode with ``synchronous=FULL``: a transaction that has committed is on
disk, so a 201 answered after the commit survives ``kill -9`` and a power cut alike. Several
processes may write one SQLite file (the busy timeout makes them wait for each other); nothing
here assumes it is the only writer.

Every unit of work (``begin``, ``connect``, ``ping``, ``bounded``) ends within ``timeout``
(config ``[database] timeout``), whatever the database or the network does:

1. Connecting, checking a connection out of the pool, and each statement have their own limits:
   libpq's ``connect_timeout``, the pool's ``pool_timeout``, the server's ``statement_timeout``
   (PostgreSQL) or the busy timeout (SQLite). TCP keepalives and ``tcp_user_timeout`` make the
   kernel give up on a dead link that nothing is waiting on.
2. None of these helps when the TCP link goes silent mid-statement (the server's timeout cannot
   reach us), so a client-side deadline cancels the caller's task. psycopg answers a
   cancellation by asking the server to cancel the query and waiting for that (up to 10 s over a
   dead link); a second cancellation shortly after makes it close the connection at once.
   SQLAlchemy treats the cancellation as a disconnect: that connection is invalidated, never
   returned to the pool, and the rest of the pool stays usable.
3. The caller gets ``DatabaseUnavailable`` ("database unavailable: no answer within 10s").
   ``pool_pre_ping`` replaces dead pooled connections, so work resumes by itself when the
   database is back.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import URL, Connection, event, make_url, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from core.errors import DatabaseUnavailable, StorageError

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same on every node sharing one PostgreSQL.
_MIGRATION_LOCK = 7_461_001
DEFAULT_TIMEOUT = 10.0
# After the deadline's cancellation, how long psycopg may try a polite cancel before the next
# cancellation makes it drop the connection instead.
_RECANCEL = 0.2
_SQLITE_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


class Database:
    """An engine plus the few operations every caller needs (begin, connect, upgrade, close)."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, echo: bool = False) -> None:
        if timeout <= 0:
            raise ValueError("the database timeout must be positive")
        parsed = make_url(url)
        self.url = url
        self.timeout = timeout
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: AsyncEngine = create_async_engine(
                url, echo=echo, connect_args={"timeout": timeout}
            )
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas(timeout))
        else:
            self.engine = create_async_engine(
                url,
                echo=echo,
                pool_pre_ping=True,
                pool_size=10,
                pool_timeout=timeout,
                connect_args=_postgres_connect_args(parsed, timeout),
            )

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for logs."""
        return make_url(self.url).render_as_string(hide_password=True)

    @asynccontextmanager
    async def bounded(self) -> AsyncIterator[None]:
        """Whatever runs inside ends within ``timeout`` or raises DatabaseUnavailable.

        For database work outside ``begin``/``connect`` (a connection kept across calls).
        """
        deadline = _Deadline(self.timeout)
        try:
            yield
        except BaseException as exc:
            if not deadline.settle():
                raise
            if isinstance(exc, asyncio.CancelledError) and deadline.cancelled_from_outside():
                raise  # that cancellation wins over ours
            raise DatabaseUnavailable(f"no answer within {self.timeout:g}s") from None
        else:
            deadline.settle()  # done although the deadline fired (a cancellation was swallowed)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed on success; driver errors -> StorageError."""
        async with self.bounded(), self._translated(), self.engine.begin() as conn:
            yield conn

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
        async with self.bounded(), self._translated(), self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise translate(exc) from exc
        except OSError as exc:
            raise DatabaseUnavailable(str(exc) or type(exc).__name__) from exc

    async def ping(self) -> None:
        """One round-trip (``SELECT 1``) within the timeout, or DatabaseUnavailable/StorageError."""
        async with self.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def upgrade(self, revision: str = "head") -> None:
        """Apply the alembic migrations up to ``revision`` (safe to run from two nodes at once).

        Not bounded by ``timeout``: a migration may rightly take longer, and a second node waits
        here for the first one's migration to finish.
        """
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(_upgrade, revision)
        except SQLAlchemyError as exc:
            raise translate(exc) from exc
        except OSError as exc:
            raise DatabaseUnavailable(str(exc) or type(exc).__name__) from exc

    async def revision(self) -> str | None:
        """The revision the database is at, or None before the first migration."""
        async with self.connect() as conn:
            return await conn.run_sync(_current_revision)

    async def close(self) -> None:
        await self.engine.dispose()


class _Deadline:
    """Cancels the current task at ``timeout``, then again every _RECANCEL until settled."""

    def __init__(self, timeout: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "a database deadline needs a running task"
        self.task = task
        self.loop = asyncio.get_running_loop()
        self.before = task.cancelling()
        self.fired = 0
        self.handle = self.loop.call_later(timeout, self._expire)

    def _expire(self) -> None:
        self.fired += 1
        self.task.cancel()
        self.handle = self.loop.call_later(_RECANCEL, self._expire)

    def settle(self) -> bool:
        """Stop the timer and take back our cancellations; True if the deadline had fired."""
        self.handle.cancel()
        for _ in range(self.fired):
            self.task.uncancel()
        fired, self.fired = self.fired > 0, 0
        return fired

    def cancelled_from_outside(self) -> bool:
        return self.task.cancelling() > self.before


class DatabaseProbe:
    """Is the database answering? One shared ``ping`` at most every ``max_age`` seconds.

    For ``/healthz``: however many callers ask at once, at most one round-trip is in flight,
    and its outcome (good or bad) is reused for ``max_age`` seconds.
    """

    def __init__(self, db: Database, *, max_age: float = 5.0) -> None:
        self.db = db
        self.max_age = max_age
        self._checked_at: float | None = None
        self._problem: str | None = None
        self._inflight: asyncio.Task[str | None] | None = None

    async def problem(self) -> str | None:
        """None while the database answers, else why not (``database unavailable: ...``)."""
        now = asyncio.get_running_loop().time()
        if self._checked_at is not None and now - self._checked_at < self.max_age:
            return self._problem
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._probe(), name="database-probe")
        # A caller that goes away must not cancel the probe the others are waiting for.
        return await asyncio.shield(self._inflight)

    async def _probe(self) -> str | None:
        try:
            await self.db.ping()
            problem = None
        except StorageError as exc:
            problem = str(exc)
        self._problem = problem
        self._checked_at = asyncio.get_running_loop().time()
        self._inflight = None
        return problem


def translate(exc: SQLAlchemyError) -> StorageError:
    """A driver error as ours: DatabaseUnavailable when the database (or the link) failed us,
    StorageError when it refused the statement."""
    orig = getattr(exc, "orig", None)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return DatabaseUnavailable(_first_line(orig if orig is not None else exc))
    if orig is not None and getattr(orig, "sqlite_errorcode", None) in _SQLITE_BUSY:
        return DatabaseUnavailable(_first_line(orig))
    if orig is not None and _is_psycopg_operational(orig):
        return DatabaseUnavailable(_first_line(orig))
    return StorageError(_short(exc))


def _is_psycopg_operational(error: BaseException) -> bool:
    # Connection failures, a dropped link, statement and lock timeouts, the server shutting down.
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency, but SQLite needs none
        return False
    return isinstance(error, psycopg.OperationalError)


def _postgres_connect_args(url: URL, timeout: float) -> dict[str, Any]:
    """libpq settings that bound connecting and statements (a URL's own values win)."""
    seconds = max(2, math.ceil(timeout))  # libpq counts whole seconds and treats 1 as 2
    millis = max(1, round(timeout * 1000))
    args: dict[str, Any] = {
        "connect_timeout": seconds,
        "keepalives": 1,
        "keepalives_idle": seconds,
        "keepalives_interval": max(1, seconds // 3),
        "keepalives_count": 3,
        # Linux only in libpq (ignored elsewhere): unacknowledged data gives up after this.
        "tcp_user_timeout": millis,
    }
    args = {k: v for k, v in args.items() if k not in url.query}
    # The server ends a statement, or a transaction left idle, that outlives the timeout.
    options = f"-c statement_timeout={millis} -c idle_in_transaction_session_timeout={millis}"
    given = url.query.get("options")
    if given:
        options = f"{options} {given if isinstance(given, str) else ' '.join(given)}"
    args["options"] = options
    return args


def _sqlite_pragmas(timeout: float) -> Callable[[Any, Any], None]:
    pragmas = (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        f"PRAGMA busy_timeout={max(1, round(timeout * 1000))}",
        "PRAGMA foreign_keys=ON",
    )

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    return on_connect


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _upgrade(conn: Connection, revision: str) -> None:
    if conn.dialect.name == "postgresql":
        # A migration is not bound by the node's statement timeout (see Database.upgrade).
        conn.execute(text("SET LOCAL statement_timeout = 0"))
        conn.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
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
    return f"database error: {_first_line(orig if orig is not None else exc)}"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
