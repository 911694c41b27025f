from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import App, make_settings, pg_database, running_app


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(make_settings(tmp_path)) as app:
        yield app


@pytest.fixture
async def auth(app: App) -> dict[str, str]:
    return {"Authorization": f"Key {await app.key()}"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """For tests of behaviours that race: None (the SQLite file in the data folder), then
    a fresh database on the real PostgreSQL server, where claims and writes truly overlap."""
    if request.param == "sqlite":
        yield None
        return
    async with pg_database() as url:
        yield url
