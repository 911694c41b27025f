"""The reaper sweeps when something is due, not every second: an idle server does no
reads, yet a start deadline or a lapsed lease is acted on about when it passes. Its
idle limit is made an hour long here, so only its schedule can explain the result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from openfal import reaper as reaper_module
from openfal.errors import RunnerLost, StartTimeout
from openfal.models import RequestRecord
from tests.worker.conftest import Parts


@pytest.fixture
async def sweeping(parts: Parts, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Parts]:
    monkeypatch.setattr(reaper_module, "IDLE_SWEEP_SECONDS", 3600.0)
    parts.tune(lease_seconds=3600.0)
    reaper = parts.reaper()
    task = asyncio.create_task(reaper.run())
    await asyncio.sleep(0.2)  # its first sweep found nothing: it sleeps until woken
    try:
        yield parts
    finally:
        reaper.stop()
        await asyncio.wait_for(task, 10)


async def test_a_new_requests_start_deadline_wakes_the_sleeping_reaper(sweeping: Parts) -> None:
    record = await sweeping.submit(start_deadline=time.time() + 1.0)
    done = await sweeping.ended(record.id, timeout=6.0)
    assert done.error_type == StartTimeout.error_type
    assert done.completed_at is not None and done.completed_at - record.created_at < 3.5


async def test_a_lease_is_reaped_when_it_runs_out(sweeping: Parts) -> None:
    """A claim does not wake the reaper; the lease's end, read at the sweep before, does."""
    record = await sweeping.submit(no_retry=True)
    await sweeping.store.claim(backends=["builtin"], worker_id="gone", lease_seconds=1.5)
    await sweeping.submit()  # new work wakes it: it reads the running request's lease
    done: RequestRecord = await sweeping.ended(record.id, timeout=8.0)
    assert done.error_type == RunnerLost.error_type
