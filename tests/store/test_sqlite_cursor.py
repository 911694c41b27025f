"""SQLite statements run on the event loop's thread (``store/sqlite_cursor.py``): every
connection of the store's SQLite engines has the inline cursor, it answers as
SQLAlchemy's own (rows, rowcount, lastrowid, executemany, the driver's errors), and
what would stop the loop (another process's lock, a long read) waits in aiosqlite's
thread instead."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from openfal.store import sqlite_cursor
from openfal.store.db import Database
from openfal.store.sqlite_cursor import InlineConnection

#: a read that takes SQLite well over INLINE_READ_SECONDS (about 50 ms here)
LONG_READ = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) SELECT count(*) FROM n"


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/inline.db")
    async with db.write() as conn:
        await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
    yield db
    await db.close()


async def ticks_during(work: Awaitable[Any]) -> tuple[Any, int]:
    """What ``work`` returns, and how often a 5 ms ticker ran on the loop meanwhile."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        return await work, ticks
    finally:
        task.cancel()


async def test_the_stores_sqlite_connections_use_the_inline_cursor(sqlite_db: Database) -> None:
    for engine in (sqlite_db.write, sqlite_db.read):
        async with engine() as conn:
            raw = await conn.get_raw_connection()
            assert isinstance(raw.dbapi_connection, InlineConnection)


async def test_statements_run_on_the_loops_thread(sqlite_db: Database) -> None:
    threads: list[int] = []
    for engine in (sqlite_db.write, sqlite_db.read):
        async with engine() as conn:
            raw = await conn.get_raw_connection()
            raw.driver_connection._conn.create_function("thread", 0, lambda: threads.append(threading.get_ident()) or 1)  # type: ignore[union-attr]
            await conn.execute(sa.text("SELECT thread()"))
    assert threads == [threading.get_ident()] * 2


async def test_it_answers_rows_counts_and_errors_like_the_driver(sqlite_db: Database) -> None:
    async with sqlite_db.write() as conn:
        inserted = await conn.execute(sa.text("INSERT INTO t (name) VALUES ('a')"))
        assert inserted.lastrowid == 1
        await conn.execute(sa.text("INSERT INTO t (name) VALUES (:n)"), [{"n": "b"}, {"n": "c"}])
        updated = await conn.execute(sa.text("UPDATE t SET name = name || '!' WHERE id > 1"))
        assert updated.rowcount == 2
        returned = await conn.execute(sa.text("UPDATE t SET name = 'z' WHERE id = 1 RETURNING id, name"))
        assert returned.all() == [(1, "z")]
    async with sqlite_db.read() as conn:
        assert (await conn.execute(sa.text("SELECT name FROM t ORDER BY id"))).scalars().all() == ["z", "b!", "c!"]
    with pytest.raises(sa.exc.IntegrityError):
        async with sqlite_db.write() as conn:
            await conn.execute(sa.text("INSERT INTO t (name) VALUES ('z')"))


async def test_a_rolled_back_write_leaves_nothing(sqlite_db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with sqlite_db.write() as conn:
            await conn.execute(sa.text("INSERT INTO t (name) VALUES ('gone')"))
            raise RuntimeError("abandon it")
    async with sqlite_db.read() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar() == 0


async def test_a_write_waits_for_another_processs_lock_without_stopping_the_loop(sqlite_db: Database, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "inline.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t (name) VALUES ('other')")
    asyncio.get_running_loop().call_later(0.3, other.commit)

    async def write() -> None:
        async with sqlite_db.write() as conn:
            await conn.execute(sa.text("INSERT INTO t (name) VALUES ('ours')"))

    _, ticks = await ticks_during(write())
    assert ticks >= 20  # the loop ran on while the write waited out the lock
    async with sqlite_db.read() as conn:
        assert (await conn.execute(sa.text("SELECT name FROM t ORDER BY id"))).scalars().all() == ["other", "ours"]
    other.close()


async def test_a_long_read_finishes_in_the_thread_without_stopping_the_loop(sqlite_db: Database) -> None:
    async def read() -> int:
        async with sqlite_db.read() as conn:
            return int((await conn.execute(sa.text(LONG_READ))).scalar_one())

    count, ticks = await ticks_during(read())
    assert count == 300000
    assert ticks >= 2


async def test_the_writer_checkpoints_the_wal_every_so_many_commits(sqlite_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_cursor, "CHECKPOINT_EVERY_COMMITS", 5)
    main_file = tmp_path / "inline.db"
    inline = await _writer(sqlite_db)
    await asyncio.to_thread(lambda: sqlite3.connect(main_file).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
    size = main_file.stat().st_size
    while (inline.commits + 1) % 5:
        await _commit_one(sqlite_db, inline.commits)
        assert main_file.stat().st_size == size  # no checkpoint inside a commit
    await _commit_one(sqlite_db, inline.commits)
    assert inline.checkpointing is not None
    await inline.checkpointing
    assert main_file.stat().st_size > size
    await _commit_one(sqlite_db, inline.commits)  # and the checkpoint left nothing open that would stop a commit


async def test_commits_go_on_while_a_checkpoint_runs(sqlite_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint is held (standing for a slow disk) until ten more commits are done."""
    monkeypatch.setattr(sqlite_cursor, "CHECKPOINT_EVERY_COMMITS", 1)
    release = threading.Event()
    real = sqlite_cursor._checkpoint
    monkeypatch.setattr(sqlite_cursor, "_checkpoint", lambda path: (release.wait(10), real(path)))
    inline = await _writer(sqlite_db)
    await _commit_one(sqlite_db, 0)
    held = inline.checkpointing
    for i in range(1, 11):
        await _commit_one(sqlite_db, i)
    assert held is not None and not held.done() and inline.checkpointing is held  # one at a time
    release.set()
    await held


async def _writer(db: Database) -> sqlite_cursor.Inline:
    async with db.write() as conn:
        return sqlite_cursor._inline((await conn.get_raw_connection()).dbapi_connection)


async def _commit_one(db: Database, n: int) -> None:
    async with db.write() as conn:
        await conn.execute(sa.text("INSERT INTO t (name) VALUES (:n)"), {"n": f"{n:0>3000}"})
