"""The query each KEDA ScaledObject runs, taken from the rendered production overlay
and run on the real PostgreSQL as KEDA's postgresql scaler runs it (a plain connection
of its own, one number back), while requests queue, run and drain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from openfal.pools import pool_endpoints
from openfal.store.db import Database
from openfal.store.pools import PoolStore
from openfal.store.requests import RequestStore
from tests.deploy.conftest import of_kind, pools_of, render
from tests.support import pg_database, request_values

pytestmark = pytest.mark.postgres


def keda_queries() -> dict[str, str]:
    """Pool -> the query of its ScaledObject's postgresql trigger."""
    objects = render("production")
    labels = {o["metadata"]["name"]: o["metadata"]["labels"]["openfal.dev/pool"] for o in of_kind(objects, "Deployment") if "openfal.dev/pool" in o["metadata"].get("labels", {})}
    return {labels[o["spec"]["scaleTargetRef"]["name"]]: o["spec"]["triggers"][0]["metadata"]["query"] for o in of_kind(objects, "ScaledObject")}


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with pg_database() as url:
        yield url


async def test_each_pools_query_counts_its_requests_as_they_queue_run_and_drain(url: str) -> None:
    db = Database(url)
    await db.migrate()
    await PoolStore(db).define(pool_endpoints(pools_of(render("production"))))  # what every process does at start
    store = RequestStore(db)
    queries = keda_queries()
    assert set(queries) == {"flux", "video"}
    keda = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))

    async def figures() -> dict[str, float]:
        return {pool: float(await keda.fetchval(query)) for pool, query in queries.items()}

    try:
        assert await figures() == {"flux": 0, "video": 0}
        flux = [await store.insert(**request_values(endpoint_id="fal-ai/flux-1/dev", backend="local")) for _ in range(3)]
        await store.insert(**request_values(endpoint_id="fal-ai/ltx-video", backend="local"))
        await store.insert(**request_values())  # an echo: in no pool
        assert await figures() == {"flux": 3, "video": 1}

        flux_endpoints = pool_endpoints({"flux": ["flux1"]})["flux"]
        running = await store.claim(backends=["local"], worker_id="flux-worker", lease_seconds=30, batch_limit=1, endpoints=flux_endpoints)
        running += await store.claim(backends=["local"], worker_id="flux-worker", lease_seconds=30, batch_limit=1, endpoints=flux_endpoints)
        assert {r.endpoint_id for r in running} == {"fal-ai/flux-1/dev"}
        assert await figures() == {"flux": 3, "video": 1}  # running still holds a worker

        await store.hand_back(running[1], "flux-worker")  # a drained worker's: still the pool's
        assert await figures() == {"flux": 3, "video": 1}

        await store.complete(running[0], result_status=200, result_body={}, worker_id="flux-worker", attempt=1)
        assert await figures() == {"flux": 2, "video": 1}
        for _record in flux[1:]:
            (claimed,) = await store.claim(backends=["local"], worker_id="w", lease_seconds=30, endpoints=flux_endpoints)
            await store.complete(claimed, result_status=200, result_body={}, worker_id="w", attempt=claimed.attempts)
        assert await figures() == {"flux": 0, "video": 1}
    finally:
        await keda.close()
        await db.close()


async def test_keda_needs_only_select_on_the_view(url: str) -> None:
    """The production overlay's advice: a role granted SELECT on the view alone runs the query."""
    db = Database(url)
    await db.migrate()
    await PoolStore(db).define(pool_endpoints(pools_of(render("production"))))
    await db.close()
    admin = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    role = f"keda_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"GRANT SELECT ON openfal_pool_queue TO {role}")
        keda = await asyncpg.connect(url.replace("postgresql+asyncpg://postgres@", f"postgresql://{role}@"))
        try:
            for query in keda_queries().values():
                assert await keda.fetchval(query) == 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await keda.fetchval("SELECT count(*) FROM requests")
        finally:
            await keda.close()
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
