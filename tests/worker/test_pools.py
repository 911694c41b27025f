"""Worker pools and the drain, at the worker's boundary: a worker told its endpoints
claims only their requests; a drained worker finishes what it can within
``drain_seconds`` and hands back the rest, uncounted and at the front of its turn; the
per-pool view counts what autoscalers scale on. SQLite file and real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from openfal.backends.base import Job, Output
from openfal.errors import RunError
from openfal.models import Status
from openfal.pools import UnknownPoolName, endpoints_of, families
from openfal.store.pools import PoolStore
from tests.worker.conftest import Parts, ScriptedBackend, running

SLEEP, ECHO = "openfal/utils/sleep", "openfal/utils/echo"


def test_a_family_stands_for_every_endpoint_of_its_models() -> None:
    flux = endpoints_of(["flux1"])
    assert {"fal-ai/flux-1/dev", "fal-ai/flux-1/schnell", "fal-ai/flux-pro/kontext", "fal-ai/flux-lora"} <= flux
    assert "fal-ai/ltx-video" not in flux
    assert endpoints_of(["ltx"]) == {"fal-ai/ltx-video"}
    assert set(families()) >= {"flux1", "ltx"}


def test_a_model_stands_for_the_endpoints_that_need_it_and_an_endpoint_for_itself() -> None:
    assert endpoints_of(["flux-schnell"]) == {"fal-ai/flux-1/schnell", "fal-ai/flux-1/schnell/redux", "fal-ai/flux/schnell"}
    assert endpoints_of(["fal-ai/flux-1/dev", ECHO]) == {"fal-ai/flux-1/dev", ECHO}


def test_a_name_that_stands_for_nothing_is_refused_naming_the_families() -> None:
    with pytest.raises(UnknownPoolName, match="flux1"):
        endpoints_of(["flux-1"])


async def test_a_pool_worker_claims_only_its_endpoints(parts: Parts) -> None:
    older = await parts.submit(endpoint_id=SLEEP, input={"seconds": 0, "steps": 1})
    mine = await parts.submit(endpoint_id=ECHO)
    claimed = await parts.store.claim(backends=["builtin"], worker_id="w", lease_seconds=30, endpoints=[ECHO])
    assert [r.id for r in claimed] == [mine.id]
    assert await parts.store.claim(backends=["builtin"], worker_id="w", lease_seconds=30, endpoints=[ECHO]) == []
    assert (await parts.store.get(older.id)).status is Status.IN_QUEUE


async def test_a_handed_back_request_counts_no_attempt_and_is_claimed_before_those_behind_it(parts: Parts) -> None:
    first = await parts.submit(key_id=None)
    await asyncio.sleep(0.01)
    behind = await parts.submit(key_id="other-key")
    (claimed,) = await parts.store.claim(backends=["builtin"], worker_id="w1", lease_seconds=30)
    assert claimed.id == first.id and claimed.attempts == 1
    assert await parts.store.hand_back(claimed, "w1")
    back = await parts.store.get(first.id)
    assert (back.status, back.attempts, back.worker_id, back.lease_expires_at, back.started_at) == (Status.IN_QUEUE, 0, None, None, None)
    # its key had its turn at the claim; the hand-back gives it back, so it is next again
    (again,) = await parts.store.claim(backends=["builtin"], worker_id="w2", lease_seconds=30)
    assert again.id == first.id and again.attempts == 1
    assert (await parts.store.get(behind.id)).status is Status.IN_QUEUE


async def test_a_request_is_handed_back_only_by_the_worker_holding_it(parts: Parts) -> None:
    await parts.submit()
    (claimed,) = await parts.store.claim(backends=["builtin"], worker_id="w1", lease_seconds=30)
    assert not await parts.store.hand_back(claimed, "someone-else")
    assert (await parts.store.get(claimed.id)).status is Status.IN_PROGRESS


async def test_draining_finishes_a_run_within_drain_seconds(parts: Parts) -> None:
    started = asyncio.Event()

    async def run(jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        started.set()
        await asyncio.sleep(0.3)
        return [Output({"ok": True})]

    parts.tune(drain_seconds=5.0, concurrency={"builtin": 1})
    request = await parts.submit()
    worker = parts.worker(ScriptedBackend(run))
    async with running(worker):
        await asyncio.wait_for(started.wait(), 10)
        queued = await parts.submit()
        worker.stop()
        assert not worker.claiming
    done = await parts.store.get(request.id)
    assert (done.status, done.result_status, done.attempts) == (Status.COMPLETED, 200, 1)
    assert (await parts.store.get(queued.id)).status is Status.IN_QUEUE  # claiming stopped at once


async def test_draining_hands_back_a_run_past_drain_seconds_and_stops_it(parts: Parts) -> None:
    seen: list[Job] = []

    async def run(jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        seen.extend(jobs)
        await asyncio.sleep(60)
        return [Output({"late": True})]

    parts.tune(drain_seconds=0.2)
    request = await parts.submit()
    worker = parts.worker(ScriptedBackend(run))
    async with running(worker):
        await parts.until(request.id, lambda r: r.status is Status.IN_PROGRESS)
        began = time.monotonic()
    assert time.monotonic() - began < 5
    back = await parts.store.get(request.id)
    assert (back.status, back.attempts, back.worker_id) == (Status.IN_QUEUE, 0, None)
    assert seen[0].cancelled  # a run in a thread stops at its next step instead of holding the exit


async def test_the_pool_view_counts_queued_running_and_the_oldest_wait(parts: Parts) -> None:
    pools = PoolStore(parts.db)
    await pools.define({"utils": frozenset({SLEEP, ECHO}), "video": frozenset({"fal-ai/ltx-video"})})
    assert [(q.pool, q.queued, q.running, q.oldest_wait_seconds) for q in await pools.queues()] == [("utils", 0, 0, 0.0), ("video", 0, 0, 0.0)]
    await parts.submit(created_at=time.time() - 30)
    await parts.submit(endpoint_id=SLEEP, input={"seconds": 0, "steps": 1})
    await parts.submit(endpoint_id="fal-ai/flux-1/dev", backend="local")  # in no pool
    await parts.store.claim(backends=["builtin"], worker_id="w", lease_seconds=30)
    utils, video = await pools.queues()
    assert (utils.pool, utils.queued, utils.running, video.queued) == ("utils", 1, 1, 0)
    assert 0 <= utils.oldest_wait_seconds < 5  # the 30 s old one is running; the other just came


async def test_defining_the_pools_again_replaces_them(parts: Parts) -> None:
    pools = PoolStore(parts.db)
    await pools.define({"a": frozenset({ECHO})})
    await pools.define({"b": frozenset({SLEEP})})
    await pools.define({"b": frozenset({SLEEP})})
    assert [q.pool for q in await pools.queues()] == ["b"]


async def test_a_worker_whose_engine_never_returns_is_not_live(parts: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run given up as stuck (cancel cannot reach it) that still has not returned is a
    hung device: liveness fails so the orchestrator restarts the process."""
    import openfal.worker

    monkeypatch.setattr(openfal.worker, "HUNG_ENGINE_SECONDS", 0.3)
    release = asyncio.Event()

    async def run(jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        await asyncio.shield(release.wait())  # deaf to cancel, as a thread inside one device call is
        return [Output({})]

    parts.tune(stuck_run_grace_seconds=0.1, drain_seconds=0)
    request = await parts.submit()
    worker = parts.worker(ScriptedBackend(run))
    async with running(worker):
        assert worker.unhealthy() == []
        await parts.until(request.id, lambda r: r.status is Status.IN_PROGRESS)
        await parts.store.request_cancel(request.id)
        await parts.ended(request.id)
        await asyncio.sleep(0.4)
        assert any("engine does not answer" in problem for problem in worker.unhealthy())
        release.set()
        await asyncio.sleep(0.05)
        assert worker.unhealthy() == []
