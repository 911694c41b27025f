"""PostgreSQL connections that died while idle in the pool (a server restart, a
dropped link) are found and replaced before a request uses them; busy connections are
not pinged at every checkout."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import sqlalchemy as sa

from openfal.store import db as db_module
from openfal.store.db import Database

pytestmark = pytest.mark.postgres


async def _kill_others(url: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
    finally:
        await conn.close()


async def _select_one(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(sa.text("SELECT 1"))).scalar() or 0)


async def test_an_idle_connection_killed_by_the_server_is_replaced_before_use(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(pg_url)
    try:
        assert await _select_one(db) == 1
        await _kill_others(pg_url)
        await asyncio.sleep(0.2)
        monkeypatch.setattr(db_module, "PING_IDLE_SECONDS", 0.1)
        assert await _select_one(db) == 1
    finally:
        await db.close()


async def test_a_connection_used_just_now_is_not_pinged(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the ping saves: a connection back in the pool for less than the idle time is
    handed out as it is (so one killed in that moment fails the one transaction)."""
    db = Database(pg_url)
    try:
        assert await _select_one(db) == 1
        await _kill_others(pg_url)
        monkeypatch.setattr(db_module, "PING_IDLE_SECONDS", 3600.0)
        with pytest.raises(sa.exc.DBAPIError):
            await _select_one(db)
        assert await _select_one(db) == 1  # the pool replaced what failed
    finally:
        await db.close()
