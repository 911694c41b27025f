"""The worker registry is the one definition of a live worker: what the admin listing
calls alive is what queued requests' ``eta_seconds`` spread over."""

from __future__ import annotations

import asyncio

import pytest

from openfal.store import workers as workers_module
from openfal.store.db import Database
from openfal.store.workers import WorkerRegistry


async def test_a_worker_counts_for_eta_slots_exactly_while_it_is_listed_alive(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers_module, "SLOTS_CACHE_SECONDS", 0.0)
    registry = WorkerRegistry(db, alive_seconds=0.3)
    await registry.report("w1", hostname="h", pid=1, started_at=0.0, backends={"builtin": {"slots": 3, "busy": 1}})
    assert [w["alive"] for w in await registry.listing()] == [True]
    assert await registry.slots("builtin") == 3 and (await registry.capacity())["builtin"]["slots"] == 3
    await asyncio.sleep(0.4)
    assert [w["alive"] for w in await registry.listing()] == [False]
    assert await registry.slots("builtin") == 0 and await registry.capacity() == {}
