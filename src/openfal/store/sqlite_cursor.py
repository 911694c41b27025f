"""SQLite statements run on the event loop's own thread, the thread only when they must wait.

aiosqlite runs every sqlite3 call in a thread of its own. Each call is a queue hand-off,
a wake-up of that thread (which needs the GIL) and a wake-up of the loop, while the
statement itself takes microseconds: under load (a client polling a status as fast as
it can, say) a claim or a completion of four statements held the write lock for 9 ms,
nearly all of it spent waiting for the two threads to take turns. So this cursor runs
each statement, its rows fetched, and each commit and rollback, directly on the
calling thread, through the sqlite3 connection aiosqlite opened. It falls back to
aiosqlite's thread, which can wait without stopping the loop, for exactly the two
things that would stop it:

- waiting for a lock: the connection's busy timeout is 0 here, so a statement that
  meets another process's write lock fails at once (``SQLITE_BUSY``) instead of
  blocking, and runs again in the thread under ``SQLITE_BUSY_TIMEOUT_MS``;
- a long read: on the readers' connections a progress handler interrupts a statement
  that has run longer than ``INLINE_READ_SECONDS`` (a usage report over a big ledger),
  and it runs again, whole, in the thread. Only reads are ever interrupted: an
  interrupted write would roll its transaction back. The writer's statements touch
  rows by index, and its bulk ones (retention) work in bounded batches.

The writer's automatic WAL checkpoint (which writes the database file and syncs it,
inside the commit that crosses 1,000 pages) is off; every ``CHECKPOINT_EVERY_COMMITS``
commits a passive one runs in a worker thread on a connection of its own, so the writer
goes on committing meanwhile (on the writer's own connection every write would queue
behind it: some 8 ms, every 33 submits here).

It is installed on each new connection only when the adapter it extends is the one it
was written against (``install``); otherwise SQLAlchemy's own cursor stays.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy.dialects.sqlite import aiosqlite as adapter
from sqlalchemy.util.concurrency import await_

#: how long another process's write lock is waited for (in aiosqlite's thread)
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: a read still running after this long on the loop's thread goes to aiosqlite's
INLINE_READ_SECONDS = 0.002
#: the progress handler looks at the clock once per this many SQLite VM instructions
PROGRESS_INSTRUCTIONS = 1000
CHECKPOINT_EVERY_COMMITS = 100
_WAIT_IN_THREAD = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_INTERRUPT}

_Result = tuple[Any, list[Any], int, int | None]
log = logging.getLogger("openfal.store")


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Result:
    """The statement, all its rows, and what the cursor says."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        else:
            cursor.execute(operation, parameters if parameters is not None else ())
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _waiting(conn: sqlite3.Connection, call: Callable[[], Any]) -> Any:
    """In aiosqlite's thread: ``call`` with SQLite's busy handler waiting for locks."""
    conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    try:
        return call()
    finally:
        conn.execute("PRAGMA busy_timeout=0")


def _checkpoint(path: str) -> None:
    """A passive checkpoint (it never waits for readers or the writer), on its own
    connection, in a worker thread."""
    conn = sqlite3.connect(path, timeout=0)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        conn.close()


def _checkpointed(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("WAL checkpoint failed (the next one retries): %s", done.exception())


def _must_wait(error: Exception) -> bool:
    """Busy, locked or interrupted (by the progress handler), whatever the extended code."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.OperationalError) and code is not None and code & 0xFF in _WAIT_IN_THREAD


class Inline:
    """One connection's statements on the calling thread (kept on aiosqlite's
    connection object: the adapter's own layout has no room for it)."""

    def __init__(self, adapted: adapter.AsyncAdapt_aiosqlite_connection, *, writer: bool) -> None:
        self.adapted = adapted
        self.conn: sqlite3.Connection = adapted._connection._conn
        self.writer = writer
        self.deadline = math.inf
        self.commits = 0
        #: the database file (empty for a temporary or in-memory database: never checkpointed)
        self.path: str = _run(self.conn, "PRAGMA database_list", None, False)[1][0][2] if writer else ""
        self.checkpointing: asyncio.Future[None] | None = None
        if not writer:
            self.conn.set_progress_handler(self._overran, PROGRESS_INSTRUCTIONS)

    def _overran(self) -> bool:
        return time.perf_counter() > self.deadline

    async def statement(self, operation: str, parameters: Any, many: bool) -> _Result:
        """The statement, run now, on this thread: the coroutine never suspends unless
        it must wait (SQLAlchemy's adapter awaits it like any driver call)."""
        run = partial(_run, self.conn, operation, parameters, many)
        if self.adapted._execute_mutex.locked():  # a call of it is in the thread: queue behind it
            return await self._in_thread(run)
        if not self.writer:
            self.deadline = time.perf_counter() + INLINE_READ_SECONDS
        try:
            return run()
        except Exception as error:
            if not _must_wait(error):
                raise
        finally:
            self.deadline = math.inf
        return await self._in_thread(partial(_waiting, self.conn, run))

    async def end(self, commit: bool) -> None:
        """Commit or roll back; a writer's commit now and then checkpoints the WAL."""
        finish = self.conn.commit if commit else self.conn.rollback
        try:
            finish()
        except Exception as error:
            if not _must_wait(error):
                raise
            await self._in_thread(partial(_waiting, self.conn, finish))
        if commit and self.writer:
            self.commits += 1
            if self.commits % CHECKPOINT_EVERY_COMMITS == 0 and self.path and (self.checkpointing is None or self.checkpointing.done()):
                self.checkpointing = asyncio.ensure_future(asyncio.to_thread(_checkpoint, self.path))
                self.checkpointing.add_done_callback(_checkpointed)

    async def _in_thread(self, call: Callable[[], Any]) -> Any:
        """``call`` in aiosqlite's thread, through the queue SQLAlchemy's adapter uses."""
        async with self.adapted._execute_mutex:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.adapted._connection._tx.put_nowait((future, call))
            return await future


def _inline(adapted: Any) -> Inline:
    return adapted._connection.openfal_inline


class InlineCursor(adapter.AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_rowcount", "_lastrowid")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        return None  # every row is fetched with the statement

    async def _async_soft_close(self) -> None:
        return None  # nothing stays open

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._statement(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._statement(operation, list(seq_of_parameters), many=True)

    def _statement(self, operation: Any, parameters: Any, *, many: bool) -> None:
        try:
            description, rows, rowcount, lastrowid = await_(_inline(self._adapt_connection).statement(operation, parameters, many))
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self._description, self._rowcount, self._lastrowid = description, rowcount, lastrowid
        self._rows = collections.deque(rows)


class InlineConnection(adapter.AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = InlineCursor

    def commit(self) -> None:
        self._end(commit=True)

    def rollback(self) -> None:
        self._end(commit=False)

    def _end(self, *, commit: bool) -> None:
        if not self._connection._connection:
            return
        try:
            await_(_inline(self).end(commit))
        except Exception as error:
            self._handle_exception(error)


def install(dbapi_connection: Any, *, writer: bool) -> bool:
    """Give a new connection the inline cursor, if it is the adapter this module
    extends (and the aiosqlite connection has the queue and handle it uses). The
    connection must have been opened with ``check_same_thread=False``."""
    if type(dbapi_connection) is not adapter.AsyncAdapt_aiosqlite_connection:
        return False
    inner = getattr(dbapi_connection, "_connection", None)
    if not hasattr(inner, "_tx") or not isinstance(getattr(inner, "_conn", None), sqlite3.Connection):
        return False
    inner.openfal_inline = Inline(dbapi_connection, writer=writer)  # type: ignore[union-attr]
    dbapi_connection.__class__ = InlineConnection
    return True


def data_version(dbapi_connection: Any) -> int | None:
    """``PRAGMA data_version`` read on the calling thread (it reads a counter and never
    waits for a lock); None when the connection is not inline."""
    inline: Inline | None = getattr(getattr(dbapi_connection, "_connection", None), "openfal_inline", None)
    if inline is None:
        return None
    return int(_run(inline.conn, "PRAGMA data_version", None, False)[1][0][0])
