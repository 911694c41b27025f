"""Engines and transactions for both databases, following each one's rules.

SQLite allows one writer at a time: every write transaction in this process is
serialised by a lock and starts with ``BEGIN IMMEDIATE`` (so two processes never
deadlock upgrading a read lock), readers use a separate pool and never block on WAL.
PostgreSQL gets one pool, and claims a small one of their own whose sessions are set
for them; claims use ``FOR UPDATE SKIP LOCKED`` (see claim_statements.py).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy import exc as exc_module
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from openfal.store import sqlite_cursor
from openfal.store.sqlite_cursor import SQLITE_BUSY_TIMEOUT_MS

MIGRATIONS = Path(__file__).parent / "migrations"
#: a PostgreSQL connection unused this long is pinged before it is handed out
PING_IDLE_SECONDS = 2.0
#: the sessions claims run in (PostgreSQL): on the generic plan (pinned by
#: tests/store/test_claim_plans.py: a custom plan of the candidate query is planned anew
#: at every execution, ~1 ms of a claim) and without JIT (the candidate query's estimate
#: passes jit_above_cost: 30-90 ms of compiling for a query that runs in one)
CLAIM_SETTINGS = {"plan_cache_mode": "force_generic_plan", "jit": "off", "enable_seqscan": "off"}
#: connections in the claimers' pool (claims at once in one process)
CLAIM_POOL_SIZE = 4


class Database:
    def __init__(self, url: str, *, pool_size: int = 20) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            _ensure_parent(url)
            self._writer = _sqlite_engine(url, immediate=True)
            self._reader = _sqlite_engine(url, immediate=False)
        else:
            self._writer = _postgres_engine(url, pool_size)
            self._reader = self._writer
            #: claims' own small pool, its sessions set for them (CLAIM_SETTINGS): setting
            #: them in each claim's transaction cost a round trip (~0.4 ms of a 3 ms
            #: claim); no connection is opened until a claim runs
            self._claimer = _postgres_engine(url, min(pool_size, CLAIM_POOL_SIZE), settings=CLAIM_SETTINGS)
        #: the writer's pool, each statement its own transaction (used on PostgreSQL)
        self._autocommit = self._writer.execution_options(isolation_level="AUTOCOMMIT")
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    @asynccontextmanager
    async def write(self, *, autocommit: bool = False, claim: bool = False) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on exit. ``autocommit`` (PostgreSQL; SQLite
        ignores it) is for a block of one statement, which is then a transaction by
        itself: no BEGIN and COMMIT round trips. ``claim``: a queue claim's, on
        PostgreSQL in the claimers' pool (``CLAIM_SETTINGS``)."""
        if self._write_lock is None:
            if claim:
                async with self._claimer.begin() as conn:
                    yield conn
                return
            async with self._autocommit.connect() if autocommit else self._writer.begin() as conn:
                yield conn
            return
        async with self._write_lock, self._writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._reader.connect() as conn:
            yield conn

    async def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version`` on the connection this process writes with:
        it changes exactly when another connection (another process) committed. Read
        under the write lock and outside any transaction, so it never waits on a
        writer and never takes SQLite's write lock."""
        assert self._write_lock is not None, "data_version is SQLite's"
        async with self._write_lock, self._writer.connect() as conn:
            raw = await conn.get_raw_connection()
            version = sqlite_cursor.data_version(raw.dbapi_connection)
            if version is not None:
                return version
            async with raw.driver_connection.execute("PRAGMA data_version") as cursor:  # type: ignore[union-attr]
                row = await cursor.fetchone()
        return int(row[0])

    async def ping(self) -> None:
        """A round trip to the database (raises when it cannot be reached)."""
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def migrate(self) -> None:
        """Bring the schema to the newest migration. Safe from many processes (an
        advisory lock on PostgreSQL, the write lock on SQLite); within one process
        migrations take turns, since alembic's ``context`` is module-global."""
        async with _migration_lock(), self.write() as conn:
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        await self._writer.dispose()
        if not self.is_sqlite:
            await self._claimer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()

    @property
    def engine(self) -> AsyncEngine:
        return self._writer

    @property
    def engines(self) -> list[AsyncEngine]:
        """Every engine of this database (writer, reader, claimers): what sees each
        statement it runs (tests count a claim's statements on them)."""
        every = [self._writer, self._reader] + ([] if self.is_sqlite else [self._claimer])
        return list({id(engine): engine for engine in every}.values())


_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _migration_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    return _MIGRATION_LOCKS.setdefault(loop, asyncio.Lock())


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _ensure_parent(url: str) -> None:
    path = url.split(":///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL. Making a new file WAL takes an exclusive lock that SQLite
    answers "database is locked" to at once (its busy handler is not consulted), so a
    second process opening the same new file at that moment tries again until the busy
    timeout has passed."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _postgres_engine(url: str, pool_size: int, *, settings: dict[str, str] | None = None) -> AsyncEngine:
    """A pool whose connections are pinged before use only after sitting idle for
    ``PING_IDLE_SECONDS``: a server restart or a dropped connection is found (and the
    connection replaced) before a request uses it, without the round trip that pinging
    at every checkout (``pool_pre_ping``) would add to each transaction of a busy
    process. No overflow: a connection that load opened is kept (overflow ones were
    closed at checkin and opened again by the next burst, 11% of an API process's CPU
    under 32 concurrent submits); past ``pool_size`` at once, writes wait their turn."""
    connect_args = {"server_settings": settings} if settings else {}
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=0, connect_args=connect_args)

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool replaces it and tries again
            raise exc_module.DisconnectionError(f"idle connection is gone: {exc}") from exc

    return engine


def _sqlite_engine(url: str, *, immediate: bool) -> AsyncEngine:
    """One engine of the pair (``immediate``: the writer). Statements run on the loop's
    thread (``sqlite_cursor``), which is why the connections may be used outside the
    thread aiosqlite opened them in."""
    engine = create_async_engine(
        url,
        pool_size=1 if immediate else 8,
        max_overflow=0 if immediate else 8,
        connect_args={"check_same_thread": False},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # compat: let SQLAlchemy emit BEGIN itself (pysqlite's own BEGIN is deferred)
        dbapi_connection.isolation_level = None
        inline = sqlite_cursor.install(dbapi_connection, writer=immediate)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        if inline:  # locks are waited for in aiosqlite's thread, checkpoints run there
            cursor.execute("PRAGMA busy_timeout=0")
            if immediate:
                cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
