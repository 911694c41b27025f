"""The worker at its own boundary: a real store (a SQLite file and the real PostgreSQL),
the real Endings, Reaper, media index and local media folder, and backends written for
each test.

The backends here are scripted on purpose: the branches under test are the worker's
(what it does when a backend crashes, returns too few results, finishes after a cancel,
...), and the ``Backend`` protocol is the seam the worker is built against. Real
backends are tested through the queue elsewhere (tests/local, tests/relay)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from openfal.accounting import Accounts, PriceList
from openfal.backends.base import Backend, BackendBase, Job, Output
from openfal.endings import Endings
from openfal.errors import RunError
from openfal.media import MediaStore
from openfal.media.local import LocalMediaStore
from openfal.models import RequestRecord, Status
from openfal.notify import Notifier
from openfal.reaper import Reaper
from openfal.store.db import Database
from openfal.store.media_index import MediaIndex
from openfal.store.requests import RequestStore
from openfal.store.workers import WorkerRegistry
from openfal.worker import Worker
from tests.support import make_settings, request_values


class ScriptedBackend(BackendBase):
    """A backend whose ``run`` is the test's coroutine; it counts its calls."""

    def __init__(self, run: Callable[[Sequence[Job]], Awaitable[Sequence[Output | RunError]]], name: str = "builtin") -> None:
        self.name = name
        self._run = run
        self.calls: list[list[str]] = []

    async def run(self, jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        self.calls.append([job.request_id for job in jobs])
        return await self._run(jobs)


class Parts:
    """Everything a worker process holds, on one database."""

    def __init__(self, db: Database, tmp_path: Path, **settings: Any) -> None:
        self.db = db
        self.settings = make_settings(tmp_path, **{"lease_seconds": 5.0, "heartbeat_seconds": 0.1, **settings})
        self.notifier = Notifier()
        self.store = RequestStore(db, notifier=self.notifier)
        self.endings = Endings(self.store, Accounts(PriceList()))
        self.media: MediaStore = LocalMediaStore(tmp_path / "media")
        self.media_index = MediaIndex(db, 3600.0)

    def tune(self, **overrides: Any) -> None:
        """Change settings before the worker is made (leases, attempts, ...)."""
        self.settings = self.settings.model_copy(update=overrides)

    def worker(
        self, backend: Backend, *, media: MediaStore | None = None, worker_id: str | None = None, registry: WorkerRegistry | None = None
    ) -> Worker:
        return Worker(
            settings=self.settings,
            store=self.store,
            endings=self.endings,
            media=media or self.media,
            media_index=self.media_index,
            backends={backend.name: backend},
            worker_id=worker_id,
            registry=registry,
        )

    def reaper(self) -> Reaper:
        return Reaper(
            settings=self.settings,
            store=self.store,
            endings=self.endings,
            media=self.media,
            media_index=self.media_index,
        )

    async def submit(self, **values: Any) -> RequestRecord:
        return await self.store.insert(**request_values(**values))

    async def ended(self, request_id: str, timeout: float = 30.0) -> RequestRecord:
        """The request once it is COMPLETED (the test fails if it never is)."""
        return await self.until(request_id, lambda r: r.status == Status.COMPLETED, timeout)

    async def until(self, request_id: str, condition: Callable[[RequestRecord], bool], timeout: float = 30.0) -> RequestRecord:
        deadline = time.monotonic() + timeout
        while True:
            record = await self.store.get(request_id)
            assert record is not None
            if condition(record):
                return record
            assert time.monotonic() < deadline, f"condition not reached; request is {record}"
            await asyncio.sleep(0.02)


@pytest.fixture
async def parts(db_url: str, tmp_path: Path) -> AsyncIterator[Parts]:
    db = Database(db_url)
    await db.migrate()
    yield Parts(db, tmp_path)
    await db.close()


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """The worker's loops run in the background while the block runs."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
