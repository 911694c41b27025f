"""Runner hints (fal's X-Fal-Runner-Hint) between two real workers on one real store (a
SQLite file, then PostgreSQL), each reporting to the real worker registry: a hinted
request goes to the worker that advertises the hint when both are free, and to the
other one when the advertiser is busy (best effort)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from openfal.backends.base import Job, Output
from openfal.errors import RunError
from openfal.store.workers import WorkerRegistry
from openfal.worker import Worker
from tests.worker.conftest import Parts, ScriptedBackend, running


class Advertising(ScriptedBackend):
    """A scripted backend whose status advertises runner hints (as a local engine does
    with its loaded models and LoRAs)."""

    def __init__(self, run: Any, hints: Sequence[str]) -> None:
        super().__init__(run)
        self.hints = list(hints)

    def status(self) -> dict[str, Any]:
        return {"runner_hints": self.hints}


async def echo(jobs: Sequence[Job]) -> Sequence[Output | RunError]:
    return [Output({"ran": job.request_id}) for job in jobs]


async def registered(workers: Sequence[Worker], hint: str, timeout: float = 10.0) -> None:
    """Until each worker has read the others' reports (the advertiser's hint known)."""
    deadline = time.monotonic() + timeout
    while not all(hint in w._hints_elsewhere.get("builtin", ()) or hint in w._hints.get("builtin", ()) for w in workers):
        assert time.monotonic() < deadline, "the workers never saw each other's reports"
        await asyncio.sleep(0.02)


async def test_a_runner_hint_lands_on_the_advertising_worker_when_two_are_free(parts: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    # a grace no loaded CI machine outlasts: past it the plain worker may rightly take the
    # request (it once did, the advertiser's claim delayed over 2 s by 4 test workers on 2 cores)
    monkeypatch.setattr("openfal.worker.HINT_GRACE_SECONDS", 30.0)
    monkeypatch.setattr("openfal.store.requests.GRACE_SECONDS", 30.0)
    registry = WorkerRegistry(parts.db)
    advertiser = parts.worker(Advertising(echo, ["lora-a"]), worker_id="advertiser", registry=registry)
    plain = parts.worker(ScriptedBackend(echo), worker_id="plain", registry=registry)
    async with running(advertiser), running(plain):
        await registered([advertiser, plain], "lora-a")
        ran_on = []
        for _ in range(5):
            record = await parts.submit(runner_hint="lora-a")
            ran_on.append((await parts.ended(record.id)).worker_id)
        other = await parts.ended((await parts.submit(runner_hint="lora-b")).id)  # nobody advertises it: anyone runs it
    assert ran_on == ["advertiser"] * 5
    assert other.result_status == 200


async def test_an_advertiser_heard_of_while_a_claim_is_under_way_still_gets_its_hinted_request(parts: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain worker's registry refresh lands while its claim is under way (CI: a loaded
    machine stretches the claim): the claim sees the advertiser's hint when it checks what
    it took, leaves the request, and the advertiser, started after, runs it."""
    monkeypatch.setattr("openfal.worker.HINT_GRACE_SECONDS", 30.0)
    monkeypatch.setattr("openfal.store.requests.GRACE_SECONDS", 30.0)
    plain = parts.worker(ScriptedBackend(echo), worker_id="plain")
    heard = asyncio.Event()
    snapshot = parts.store._claim_snapshot

    async def refresh_lands_mid_claim(backends: Sequence[str]) -> Any:
        if not heard.is_set():  # what plain's _reports would set from the registry
            plain._hints_elsewhere = {"builtin": frozenset({"lora-a"})}
            heard.set()
        return await snapshot(backends)

    monkeypatch.setattr(parts.store, "_claim_snapshot", refresh_lands_mid_claim)
    hinted = await parts.submit(runner_hint="lora-a")  # queued first: plain's first claim finds it
    async with running(plain):
        await asyncio.wait_for(heard.wait(), 10)
        async with running(parts.worker(Advertising(echo, ["lora-a"]), worker_id="advertiser")):
            assert (await parts.ended(hinted.id)).worker_id == "advertiser"


async def test_a_hinted_request_runs_elsewhere_while_its_advertiser_is_busy(parts: Parts) -> None:
    release = asyncio.Event()

    async def hold(jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        await release.wait()
        return await echo(jobs)

    parts.tune(concurrency={"builtin": 1})  # one slot each: the held run fills the advertiser
    registry = WorkerRegistry(parts.db)
    advertiser = parts.worker(Advertising(hold, ["lora-a"]), worker_id="advertiser", registry=registry)
    plain = parts.worker(ScriptedBackend(echo), worker_id="plain", registry=registry)
    async with running(advertiser), running(plain):
        await registered([advertiser, plain], "lora-a")
        first = await parts.submit(runner_hint="lora-a")
        await parts.until(first.id, lambda r: r.worker_id == "advertiser")
        second = await parts.submit(runner_hint="lora-a")
        started = time.monotonic()
        done = await parts.ended(second.id)
        release.set()
        await parts.ended(first.id)
    assert done.worker_id == "plain"
    assert time.monotonic() - started < 10  # at most a grace and a registry report late
