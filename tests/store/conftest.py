"""A ``db`` on a real SQLite file and on the real PostgreSQL server (a fresh database
per test; PostgreSQL being down fails these tests: CI starts it)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from openfal.store.db import Database
from tests.support import create_pg_database, drop_pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'openfal.db'}"
        return
    name = await create_pg_database()
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        await drop_pg_database(name)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database alone, for what only PostgreSQL has (advisory locks)."""
    name = await create_pg_database()
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        await drop_pg_database(name)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture
def new_request() -> Callable[..., dict]:
    """Keyword arguments for RequestStore.insert."""

    def make(**overrides: object) -> dict:
        return {
            "id": str(uuid.uuid4()),
            "app": "openfal/utils",
            "endpoint_id": "openfal/utils/echo",
            "backend": "builtin",
            "key_id": None,
            "priority": 0,
            "input": {},
            "base_url": "http://test",
            **overrides,
        }

    return make
