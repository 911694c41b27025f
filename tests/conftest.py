"""Fixtures every test folder shares."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database URL on a real SQLite file, then on the real PostgreSQL server (a fresh
    database per test; PostgreSQL being down fails these tests: scripts/test starts one)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'openfal.db'}"
        return
    async with pg_database() as url:
        yield url


#: fixtures that open a PostgreSQL database of their own (``db_url``'s PostgreSQL half is marked above)
PG_FIXTURES = {"pg_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs PostgreSQL and is not marked ``postgres`` stops the run at collection,
    so ``-m "not postgres"`` always means "runs without a PostgreSQL server"."""
    unmarked = [
        item.nodeid
        for item in items
        if PG_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("postgres") is None
    ]
    if unmarked:
        raise pytest.UsageError("tests that use PostgreSQL must be marked postgres: " + ", ".join(unmarked))
