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


#: the files that take longest on CI's two cores (``--durations``: compiling, killed and
#: restarted servers, mypy), started first on parallel workers: scripts/test turns off
#: xdist's own order (files with the most tests first), which left a few-test file of
#: two minutes running alone at the end of the run
SLOW_FIRST = (
    "tests/local/test_compiled_engine.py",
    "tests/local/test_flux2_compiled.py",
    "tests/e2e/test_scale_out.py",
    "tests/e2e/test_demo.py",
    "tests/test_house_rules.py",
    "tests/local/test_compiled_z_image.py",
    "tests/local/test_gpus_and_readiness.py",
    "tests/e2e/test_js_streams_proxy_and_realtime.py",
    "tests/playground/test_playground.py",
    "tests/local/test_gpu_benchmark_smoke.py",
    "tests/e2e/test_fal_client.py",
    "tests/relay/test_relay_openfal.py",
    "tests/local/test_qwen_and_z_image_queue.py",
)

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
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest keep their order
