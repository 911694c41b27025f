"""Two slots per GPU engine: the second claims only once the first run's engine work is
over, so encoding and publishing overlap the next run, and a busy GPU never takes a
request that would only wait for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from openfal.backends.builtin import BuiltinBackend
from openfal.backends.local import LocalBackend
from openfal.config import Settings
from tests.local.helpers import TEST_OPTIONS, make_job
from tests.support import running_app, wait_status

BODY = {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 2, "seed": 3}


async def test_the_claim_gate_opens_when_the_engine_call_returns(make_settings: Callable[..., Settings]) -> None:
    local = LocalBackend(make_settings(), options=TEST_OPTIONS)
    engine = local.engine()
    await local.claim_gate()  # idle: open
    engine.lock.acquire()  # the GPU busy with the run below
    job, _ = make_job("fal-ai/flux-1/schnell", BODY)
    run = asyncio.create_task(local.run([job]))
    gate = asyncio.create_task(local.claim_gate())
    await asyncio.sleep(0.3)
    assert not gate.done()  # a run is on the GPU: no second claim
    engine.lock.release()
    await asyncio.wait_for(gate, 60)
    await run
    await local.close()


async def test_a_busy_engine_leaves_the_next_request_queued_for_an_idle_gpu(make_settings: Callable[..., Settings]) -> None:
    """With the engine busy, the worker's free second slot does not claim the next
    request (it stays IN_QUEUE, where any idle GPU's worker could take it); once the
    engine is free both complete."""
    settings = make_settings(poll_interval_seconds=0.05, heartbeat_seconds=0.3)
    assert settings.concurrency["local"] == 2
    busy = LocalBackend(settings, options=TEST_OPTIONS)
    async with running_app(settings, {"builtin": BuiltinBackend(), "local": busy}) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        engine = busy.engine()
        engine.lock.acquire()
        try:
            first = (await app.client.post("/fal-ai/flux-1/schnell", json=BODY, headers=auth)).json()
            deadline = time.monotonic() + 30
            while (await app.client.get(first["status_url"], headers=auth)).json()["status"] != "IN_PROGRESS":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            second = (await app.client.post("/fal-ai/flux-1/schnell", json={**BODY, "seed": 4}, headers=auth)).json()
            await asyncio.sleep(1.0)  # the free slot had time to claim, were it allowed to
            status: dict[str, Any] = (await app.client.get(second["status_url"], headers=auth)).json()
            assert status["status"] == "IN_QUEUE"
        finally:
            engine.lock.release()
        for u in (first, second):
            assert (await wait_status(app.client, u["status_url"], auth, timeout=60)).json()["status"] == "COMPLETED"
