"""/metrics carries each worker pool's queue (OPENFAL_POOLS) as gauges, read from the
same view KEDA's postgresql trigger reads, so both autoscaler paths see one figure."""

from __future__ import annotations

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
