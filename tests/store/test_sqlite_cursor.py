"""SQLite statements run in one trip to aiosqlite's thread: every connection of the
store's SQLite engines has the one-trip cursor, and it answers as SQLAlchemy's own
(rows, rowcount, lastrowid, executemany, the driver's errors)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from openfal.store.db import Database
from openfal.store.sqlite_cursor import OneTripConnection


@pytest.fixture
async def sqlite_db(tmp_path: Path):  # noqa: ANN201
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/one-trip.db")
    yield db
    await db.close()


async def test_the_stores_sqlite_connections_use_the_one_trip_cursor(sqlite_db: Database) -> None:
    for engine in (sqlite_db.write, sqlite_db.read):
        async with engine() as conn:
            raw = await conn.get_raw_connection()
            assert isinstance(raw.dbapi_connection, OneTripConnection)


async def test_it_answers_rows_counts_and_errors_like_the_driver(sqlite_db: Database) -> None:
    async with sqlite_db.write() as conn:
        await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
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
