"""A worker with several free slots takes them in one claim: the candidate query,
whose cost grows with the keys waiting, is asked once for all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from openfal.backends.base import Job, Output
from openfal.errors import RunError
from tests.worker.conftest import Parts, ScriptedBackend, running

ECHO = "openfal/utils/echo"


async def _first_claim_size(parts: Parts, *, together: bool) -> int:
    release = asyncio.Event()

    async def run(jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        await release.wait()
        return [Output(payload={"ok": True}) for _ in jobs]

    parts.tune(concurrency={"builtin": 4})
    queued = [await parts.submit(endpoint_id=ECHO, key_id=f"key-{i}") for i in range(4)]
    claims: list[int] = []
    claim = parts.store.claim

    async def counted(**values: Any) -> Any:  # the real claim, counted
        taken = await claim(**values)
        claims.append(len(taken))
        return taken

    parts.store.claim = counted  # type: ignore[method-assign]
    backend = ScriptedBackend(run)
    backend.claims_together = together
    async with running(parts.worker(backend)):
        while len(backend.calls) < 4:
            await asyncio.sleep(0.01)
        release.set()
        for record in queued:
            await parts.ended(record.id)
    assert all(len(call) == 1 for call in backend.calls)
    return claims[0]


async def test_a_backend_whose_slots_do_not_claim_together_claims_one_at_a_time(parts: Parts) -> None:
    """A GPU engine's second slot waits for the GPU (its claim gate): it must not be
    filled by the first slot's claim."""
    assert await _first_claim_size(parts, together=False) == 1


async def test_free_slots_are_filled_by_one_claim_one_run_each(parts: Parts) -> None:
    assert await _first_claim_size(parts, together=True) == 4


async def test_a_batching_backends_slot_is_given_back_after_a_claim_that_found_nothing(parts: Parts) -> None:
    async def run(jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        return [Output(payload={"ok": True}) for _ in jobs]

    parts.tune(concurrency={"builtin": 1}, poll_interval_seconds=0.05)
    backend = ScriptedBackend(run)
    backend.max_batch_size = 4
    async with running(parts.worker(backend)):
        await asyncio.sleep(0.3)  # claims that find the queue empty
        record = await parts.submit(endpoint_id=ECHO)
        await parts.ended(record.id, timeout=10)
