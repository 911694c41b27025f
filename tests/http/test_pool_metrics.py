"""/metrics carries each worker pool's queue (OPENFAL_POOLS) as gauges, read from the
same view KEDA's postgresql trigger reads, so both autoscaler paths see one figure."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.support import make_settings, running_app, sample, scrape


async def test_pool_gauges_show_each_pools_waiting_requests_and_oldest_wait(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, auth_enabled=False, in_process_workers=False, pools={"utils": ["openfal/utils/sleep"], "echo": ["openfal/utils/echo"]}
    )
    async with running_app(settings) as app:
        for _ in range(2):
            response = await app.client.post("/openfal/utils/sleep", json={"seconds": 0.1, "steps": 1})
            assert response.status_code == 200, response.text
        scraped = await scrape(app.client, {})
        assert sample(scraped, "openfal_pool_queue_depth", pool="utils") == 2
        assert sample(scraped, "openfal_pool_queue_depth", pool="echo") == 0
        assert sample(scraped, "openfal_pool_requests_running", pool="utils") == 0
        assert 0 <= sample(scraped, "openfal_pool_oldest_wait_seconds", pool="utils") < 10
        rows = await app.runtime.pool_queues.queues()
        assert [(q.pool, q.queued) for q in rows] == [("echo", 0), ("utils", 2)]


async def test_the_admin_queue_view_reports_each_pool_with_the_workers_that_claim_only_its_endpoints(tmp_path: Path, database_url: str | None) -> None:
    """The console's /api/admin/queues: one row per pool (the view's counts and oldest
    wait, its endpoints, and the live workers of that pool: here an in-process worker
    that claims only echo), and the per-backend rows beside them."""
    settings = make_settings(
        tmp_path,
        auth_enabled=False,
        database_url=database_url,
        worker_models=("openfal/utils/echo",),
        pools={"utils": ["openfal/utils/sleep"], "echo": ["openfal/utils/echo"]},
    )
    async with running_app(settings) as app:
        for _ in range(2):  # no worker claims sleep: both wait
            assert (await app.client.post("/openfal/utils/sleep", json={"seconds": 0.1, "steps": 1})).status_code == 200
        deadline = time.monotonic() + 10
        while True:
            answer = (await app.client.get("/api/admin/queues")).json()
            pools = {p["pool"]: p for p in answer["pools"]}
            if pools["echo"]["workers"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert (pools["utils"]["queued"], pools["utils"]["running"], pools["utils"]["endpoints"]) == (2, 0, ["openfal/utils/sleep"])
        assert 0 < pools["utils"]["oldest_wait_seconds"] < 10
        assert (pools["utils"]["workers"], pools["utils"]["slots"]) == (0, 0)
        assert pools["echo"]["queued"] == 0 and pools["echo"]["workers"] == 1 and pools["echo"]["slots"] >= 1
        [builtin] = answer["backends"]
        assert (builtin["backend"], builtin["queued"], builtin["workers"]) == ("builtin", 2, 1)
