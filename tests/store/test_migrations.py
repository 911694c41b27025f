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
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            while not await holder.fetchval(waiting):  # the migration queues for the lock
                assert not migrating.done(), migrating
                await asyncio.sleep(0.02)
            assert not migrating.done()
            assert await holder.fetchval("SELECT to_regclass('requests')") is None
        await asyncio.wait_for(migrating, 30)
        assert await _diff(db) == []
    finally:
        await holder.close()
        await db.close()


async def test_upgrading_a_database_with_requests_keeps_them_and_fills_the_new_columns(db_url: str) -> None:
    """A database at 0002 holding a queued request (an operator upgrading openfal)
    migrates to head: the request is still there and claimable, with the defaults of
    the columns added since (retries allowed, server media TTL, no idempotency key);
    downgrading to 0002 and back works too."""
    import sqlalchemy as sa
    from alembic import command

    from openfal.store.db import alembic_config
    from openfal.store.requests import RequestStore

    db = Database(db_url)
    try:
        async with db.write() as conn:
            await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0002"))
            await conn.execute(
                sa.text(
                    "INSERT INTO requests (id, app, endpoint_id, backend, status, priority, input, base_url, store_io, created_at,"
                    " attempts, cancel_requested, backend_state, version)"
                    " VALUES ('old-1', 'openfal/utils', 'openfal/utils/echo', 'builtin', 'IN_QUEUE', 0, '{}', 'http://x', true, 1.0,"
                    " 0, false, '{}', 0)"
                )
            )
        await db.migrate()
        assert await _diff(db) == []
        record = await RequestStore(db).get("old-1")
        assert record is not None and record.may_retry(3)
        assert (record.no_retry, record.media_ttl, record.media_keep_forever, record.idempotency_key) == (False, None, False, None)
        async with db.write() as conn:
            await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0002"))
        await db.migrate()
        (claimed,) = await RequestStore(db).claim(backends=["builtin"], worker_id="w", lease_seconds=30, batch_limit=1)
        assert claimed.id == "old-1"
    finally:
        await db.close()
