"""SQLite statements in one trip to aiosqlite's thread each.

aiosqlite runs every sqlite3 call in its own thread; SQLAlchemy's adapter makes four
such calls per statement (open a cursor, execute, fetch, close), each a queue hand-off
and a loop wake-up of about 0.1 ms, while the statement itself takes microseconds. A
queue claim or a completion is several statements, so this was most of the time from
submit to COMPLETED. This cursor runs the whole statement (execute, fetch every row,
close) as one call in that thread, through the same queue SQLAlchemy's adapter uses.

It is installed on each new connection only when the adapter it extends is the one it
was written against (``install``); otherwise SQLAlchemy's own cursor stays.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from functools import partial
from typing import Any

from sqlalchemy.dialects.sqlite import aiosqlite as adapter
from sqlalchemy.util.concurrency import await_

_Result = tuple[Any, list[Any], int, int | None]


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Result:
    """In aiosqlite's thread: the statement, all its rows, and what the cursor says."""
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


class OneTripCursor(adapter.AsyncAdapt_aiosqlite_cursor):
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
        return None  # every row is fetched in the one trip

    async def _async_soft_close(self) -> None:
        return None  # nothing stays open in the thread

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._trip(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._trip(operation, list(seq_of_parameters), many=True)

    def _trip(self, operation: Any, parameters: Any, *, many: bool) -> None:
        try:
            description, rows, rowcount, lastrowid = await_(self._queued(operation, parameters, many))
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self._description, self._rowcount, self._lastrowid = description, rowcount, lastrowid
        self._rows = collections.deque(rows)

    async def _queued(self, operation: Any, parameters: Any, many: bool) -> _Result:
        async with self._adapt_connection._execute_mutex:
            future: asyncio.Future[_Result] = asyncio.get_running_loop().create_future()
            self._connection._tx.put_nowait((future, partial(_run, self._connection._conn, operation, parameters, many)))
            return await future


class OneTripConnection(adapter.AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor


def install(dbapi_connection: Any) -> bool:
    """Give a new connection the one-trip cursor, if it is the adapter this module
    extends (and the aiosqlite connection has the queue and handle it uses)."""
    if type(dbapi_connection) is not adapter.AsyncAdapt_aiosqlite_connection:
        return False
    inner = getattr(dbapi_connection, "_connection", None)
    if not hasattr(inner, "_tx") or not hasattr(inner, "_conn"):
        return False
    dbapi_connection.__class__ = OneTripConnection
    return True
