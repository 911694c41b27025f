"""A ``db`` on ``db_url`` (tests/conftest.py: a real SQLite file, then the real
PostgreSQL server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from openfal.store.db import Database
from tests.support import pg_database, request_values


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database alone, for what only PostgreSQL has (advisory locks)."""
    async with pg_database() as url:
        yield url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture
def new_request() -> Callable[..., dict]:
    """Keyword arguments for RequestStore.insert."""

    return request_values
