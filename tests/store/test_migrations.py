"""Migrations produce exactly the schema the code uses, on both databases."""

from __future__ import annotations

import asyncio
import os
import sys
from asyncio.subprocess import PIPE

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from openfal.store.db import Database
from openfal.store.schema import metadata


async def _diff(db: Database) -> list:
    async with db.engine.connect() as conn:
        return await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))


async def test_migrated_schema_equals_the_metadata(db: Database) -> None:
    """After migrate(), alembic finds no difference between the database and schema.py."""
    assert await _diff(db) == []


async def test_migrating_twice_changes_nothing(db: Database) -> None:
    """A second migrate() is a no-op (every process runs it at start)."""
    await db.migrate()
    assert await _diff(db) == []


async def test_concurrent_migrations_from_two_processes_succeed(db_url: str) -> None:
    """Two `openfal migrate` processes started at once on a fresh database both succeed."""
    env = {**os.environ, "OPENFAL_DATABASE_URL": db_url}
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-m", "openfal", "migrate", env=env, stdout=PIPE, stderr=PIPE)
        for _ in range(2)
    ]
    outputs = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    db = Database(db_url)
    try:
        assert await _diff(db) == []
    finally:
        await db.close()


async def test_concurrent_migrations_in_one_process_take_turns(db_url: str) -> None:
    """Two Database objects of one process migrating at once both succeed."""
    first, second = Database(db_url), Database(db_url)
    try:
        await asyncio.gather(first.migrate(), second.migrate())
        assert await _diff(first) == []
    finally:
        await first.close()
        await second.close()


@pytest.mark.postgres
async def test_migration_waits_for_the_advisory_lock(pg_url: str) -> None:
    """On PostgreSQL migrate() holds off while another process holds the migration lock, then finishes."""
    holder = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    db = Database(pg_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock(7242001)")
            migrating = asyncio.create_task(db.migrate())
            await asyncio.sleep(0.5)
            assert not migrating.done()
            assert await holder.fetchval("SELECT to_regclass('requests')") is None
        await asyncio.wait_for(migrating, 30)
        assert await _diff(db) == []
    finally:
        await holder.close()
        await db.close()
