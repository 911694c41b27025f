"""The worker registry: processes running workers report themselves, so operators (admin
API, CLI, /metrics) and load balancers (/health/ready) see capacity across processes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from openfal.cli import main
from openfal.models import RequestRecord
from openfal.store.db import Database
from openfal.store.requests import RequestStore
from openfal.store.schema import workers
from tests.support import App, create_pg_database, drop_pg_database, make_settings, pg_database_url, running_app, sample, scrape


async def _registered(app: App, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while not (rows := await app.runtime.registry.listing()):
        assert time.monotonic() < deadline, "the worker never reported"
        await asyncio.sleep(0.05)
    return rows


async def test_a_running_worker_lists_its_slots_and_backend_status(app: App) -> None:
    """The in-process worker reports its host, pid, slots and busy slots per backend; a
    running request shows as a busy slot."""
    admin = {"Authorization": f"Key {await app.key('ops', admin=True)}"}
    await _registered(app)
    body = (await app.client.post("/openfal/utils/sleep", json={"seconds": 3, "steps": 30}, headers=admin)).json()
    deadline = time.monotonic() + 15
    while True:
        [worker] = (await app.client.get("/api/admin/workers", headers=admin)).json()
        if worker["backends"]["builtin"]["busy"] == 1:
            break
        assert time.monotonic() < deadline, worker
        await asyncio.sleep(0.2)
    assert worker["alive"] is True and worker["pid"] > 0 and worker["backends"]["builtin"]["slots"] >= 1
    assert worker["backends"]["builtin"]["status"] == {}
    await app.client.put(body["cancel_url"], headers=admin)


async def test_the_worker_list_is_for_admins_only(app: App) -> None:
    assert (await app.client.get("/api/admin/workers", headers={"Authorization": f"Key {await app.key()}"})).status_code == 403


async def test_a_stopped_worker_leaves_the_registry(tmp_path: Path) -> None:
    """A graceful stop removes the process's entry."""
    async with running_app(make_settings(tmp_path)) as app:
        await _registered(app)
        registry = app.runtime.registry
    assert await registry.listing() == []


async def test_a_silent_worker_is_not_alive_and_is_forgotten_later(app: App) -> None:
    """A worker that stopped reporting (killed) is listed as not alive, leaves the
    capacity count, and is dropped by forget_before."""
    registry = app.runtime.registry
    await _registered(app)
    async with app.runtime.db.write() as conn:
        await conn.execute(
            workers.insert().values(
                id="dead", hostname="h", pid=1, started_at=0, last_seen=time.time() - 600, backends={"builtin": {"slots": 8, "busy": 8}}
            )
        )
    listing = {w["id"]: w["alive"] for w in await registry.listing()}
    assert listing["dead"] is False and list(listing.values()).count(True) == 1
    assert (await registry.capacity())["builtin"]["workers"] == 1
    assert await registry.forget_before(time.time() - 60) == 1
    assert "dead" not in {w["id"] for w in await registry.listing()}


async def test_ready_reports_capacity_and_metrics_export_it(app: App) -> None:
    """/health/ready is 200 with live slots per backend; /metrics has the cluster gauges."""
    await _registered(app)
    ready = await app.client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok" and ready.json()["workers"]["builtin"]["workers"] == 1
    admin = {"Authorization": f"Key {await app.key('ops', admin=True)}"}
    scraped = await scrape(app.client, admin)
    slots = ready.json()["workers"]["builtin"]["slots"]
    assert slots == app.runtime.settings.concurrency.get("builtin", 1) and slots > 0
    assert sample(scraped, "openfal_cluster_worker_slots", backend="builtin") == slots


@pytest.mark.postgres
async def test_ready_and_submits_are_503_when_the_database_is_gone(tmp_path: Path) -> None:
    """The real PostgreSQL database is dropped under a running app: readiness says so,
    and a submit gets a retryable 503 in fal's shape, not a 500."""
    name = await create_pg_database()
    try:
        settings = make_settings(tmp_path, database_url=pg_database_url(name), in_process_workers=False)
        async with running_app(settings) as app:
            auth = {"Authorization": f"Key {await app.key()}"}
            assert (await app.client.get("/api/me", headers=auth)).status_code == 200  # the key is now cached
            assert (await app.client.get("/health/ready")).status_code == 200
            await drop_pg_database(name)
            down = await app.client.get("/health/ready")
            assert down.status_code == 503 and down.json()["status"] == "unavailable"
            assert (await app.client.get("/health")).status_code == 200
            submit = await app.client.post("/openfal/utils/echo", json={}, headers=auth)
            assert submit.status_code == 503 and submit.json()["error_type"] == "runner_scheduling_failure"
            assert submit.headers["retry-after"] == "2"
    finally:
        await drop_pg_database(name)


def test_cli_lists_workers(tmp_path: Path) -> None:
    """`openfal workers --json` reads the registry of the configured database."""

    async def register() -> None:
        async with running_app(make_settings(tmp_path)) as app, app.runtime.db.write() as conn:
            await conn.execute(
                workers.insert().values(
                    id="gpu-1", hostname="gpu", pid=7, started_at=0, last_seen=time.time(), backends={"local": {"slots": 1, "busy": 0}}
                )
            )

    asyncio.run(register())
    out = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "workers", "--json"])
    assert out.exit_code == 0, out.output
    assert [w["id"] for w in json.loads(out.stdout)] == ["gpu-1"]
    table = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "workers"])
    assert "local 0/1" in table.output



async def test_stop_lets_a_claim_in_flight_finish(tmp_path: Path) -> None:
    """A worker told to stop while its dispatcher is claiming lets the claim finish (a
    claim cut off mid-transaction left SQLite's write lock held, and the next write
    waited out the busy timeout), then leaves the registry."""
    async with running_app(make_settings(tmp_path)) as app:
        store, registry = app.runtime.requests, app.runtime.registry
        await _registered(app)
        claim = store.claim
        started, stopped, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def slow_claim(**kwargs: object) -> list:
            started.set()
            await stopped.wait()  # the stop arrives while this claim is in flight
            records = await claim(**kwargs)
            finished.set()
            return records

        store.claim = slow_claim  # type: ignore[method-assign]
        await asyncio.wait_for(started.wait(), 10)
        app.runtime.worker.stop()
        stopped.set()
        await asyncio.wait_for(finished.wait(), 10)
    assert await registry.listing() == []


async def test_stop_drains_a_running_request_within_the_grace_period(tmp_path: Path) -> None:
    """A request running when the worker stops completes normally (heartbeats go on
    while it drains) rather than being handed back."""
    async with running_app(make_settings(tmp_path, auth_enabled=False, drain_seconds=20)) as app:
        body = (await app.client.post("/openfal/utils/sleep", json={"seconds": 1.5, "steps": 3})).json()
        deadline = time.monotonic() + 15
        while (await app.runtime.requests.get(body["request_id"])).status.value != "IN_PROGRESS":
            assert time.monotonic() < deadline, "the request never started"
            await asyncio.sleep(0.05)
        requests = app.runtime.requests
    record = await _final(requests, body["request_id"])
    assert (record.status.value, record.error, record.attempts) == ("COMPLETED", None, 1)


async def _final(store: RequestStore, request_id: str) -> RequestRecord:
    """The record after the app stopped (its database closed: reopen it)."""
    db = Database(store.db.url)
    try:
        return await RequestStore(db).get(request_id)
    finally:
        await db.close()
