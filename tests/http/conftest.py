from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import App, make_settings, running_app


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(make_settings(tmp_path)) as app:
        yield app


@pytest.fixture
async def auth(app: App) -> dict[str, str]:
    return {"Authorization": f"Key {await app.key()}"}
