"""Fixtures every test folder shares."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database URL on a real SQLite file, then on the real PostgreSQL server (a fresh
    database per test; PostgreSQL being down fails these tests: CI starts it)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'openfal.db'}"
        return
    async with pg_database() as url:
        yield url
