"""SIGTERM to a worker process, as an orchestrator scaling a pool down sends it: real
``openfal worker`` processes on the real PostgreSQL, requests on the builtin sleep
endpoint. Claiming stops at once, the running request completes within
OPENFAL_DRAIN_SECONDS, what outlasts it is handed back for another worker to take at
once (not at lease expiry), nothing is lost or run twice, and the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from openfal.models import RequestRecord, Status
from openfal.store.db import Database
from openfal.store.requests import RequestStore
from tests.support import ServerProcess, free_port, pg_database, request_values

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SLEEP = "openfal/utils/sleep"
#: long enough that a request taken over by lease expiry would be seen as such
LEASE_SECONDS = 30


@pytest.fixture
async def db_url() -> AsyncIterator[str]:
    async with pg_database() as url:
        db = Database(url)
        await db.migrate()
        await db.close()
        yield url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[RequestStore]:
    db = Database(db_url)
    yield RequestStore(db)
    await db.close()


@pytest.fixture
def workers(db_url: str, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.stop()


def start_worker(started: list[ServerProcess], db_url: str, tmp_path: Path, name: str, *, drain_seconds: float) -> ServerProcess:
    """``openfal worker --models openfal/utils/sleep`` with one slot, ready (claiming)."""
    port = free_port()
    env = {
        "OPENFAL_DATABASE_URL": db_url,
        "OPENFAL_CONCURRENCY": '{"builtin": 1}',
        "OPENFAL_DRAIN_SECONDS": str(drain_seconds),
        "OPENFAL_LEASE_SECONDS": str(LEASE_SECONDS),
        "OPENFAL_HEARTBEAT_SECONDS": "1",
        "OPENFAL_POLL_INTERVAL_SECONDS": "0.05",
    }
    args = ["--data-dir", str(tmp_path / name), "worker", "--models", SLEEP, "--port", str(port), "--host", "127.0.0.1"]
    process = ServerProcess(args, env, port=port, log_path=tmp_path / f"{name}.log")
    started.append(process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.proc.poll() is None, process.tail()
        try:
            if httpx.get(f"{process.url}/health/ready", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"worker {name} never became ready: {process.tail()}")


async def sleep_request(store: RequestStore, seconds: float) -> RequestRecord:
    return await store.insert(**request_values(endpoint_id=SLEEP, input={"seconds": seconds, "steps": max(1, int(seconds * 10))}))


async def until(store: RequestStore, request_id: str, status: Status, timeout: float = 30.0) -> RequestRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = await store.get(request_id)
        assert record is not None
        if record.status is status:
            return record
        assert time.monotonic() < deadline, f"{request_id} never reached {status}: {record}"
        await asyncio.sleep(0.02)


async def exit_code(process: ServerProcess, timeout: float = 30.0) -> int:
    return await asyncio.to_thread(process.proc.wait, timeout)


async def test_sigterm_completes_the_running_request_and_leaves_the_queued_one_to_the_next_worker(
    store: RequestStore, workers: list[ServerProcess], db_url: str, tmp_path: Path
) -> None:
    first = start_worker(workers, db_url, tmp_path, "first", drain_seconds=20)
    running = await sleep_request(store, 3)
    held = await until(store, running.id, Status.IN_PROGRESS)
    queued = await sleep_request(store, 0.2)

    first.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(base_url=first.url) as client:
        assert (await client.get("/health/ready")).status_code == 503  # draining: not ready
        assert (await client.get("/health")).status_code == 200  # but alive
        assert "openfal_worker_busy_slots" in (await client.get("/metrics")).text
    assert await exit_code(first) == 0, first.tail()

    done = await store.get(running.id)
    assert (done.status, done.result_status, done.attempts, done.error) == (Status.COMPLETED, 200, 1, None), done
    waiting = await store.get(queued.id)
    assert (waiting.status, waiting.attempts) == (Status.IN_QUEUE, 0)  # the draining worker took nothing new

    start_worker(workers, db_url, tmp_path, "second", drain_seconds=20)
    ready_at = time.time()
    taken = await until(store, queued.id, Status.COMPLETED)
    assert taken.started_at is not None and taken.started_at - ready_at < 1.0
    assert (taken.result_status, taken.attempts) == (200, 1)
    assert held.worker_id is not None and "second" not in held.worker_id


async def test_sigterm_hands_back_a_run_that_outlasts_the_drain_and_another_worker_takes_it_at_once(
    store: RequestStore, workers: list[ServerProcess], db_url: str, tmp_path: Path
) -> None:
    pair = [start_worker(workers, db_url, tmp_path, name, drain_seconds=0.5) for name in ("one", "two")]
    ids = {httpx.get(f"{p.url}/health/ready").json()["workers"][0]: p for p in pair}
    long = await sleep_request(store, 4)
    held = await until(store, long.id, Status.IN_PROGRESS)
    holder = ids[held.worker_id]  # the other one is idle: its one request is the holder's

    holder.proc.send_signal(signal.SIGTERM)
    assert await exit_code(holder) == 0, holder.tail()
    exited_at = time.time()

    retaken = await until(store, long.id, Status.IN_PROGRESS, timeout=5)
    assert retaken.worker_id != held.worker_id
    assert retaken.attempts == 1  # the drained attempt is not counted
    assert retaken.started_at is not None and retaken.started_at - exited_at < 1.0  # not after the 30 s lease
    done = await until(store, long.id, Status.COMPLETED)
    assert (done.result_status, done.attempts, done.result_body) == (200, 1, {"slept": 4.0, "steps": 40})
