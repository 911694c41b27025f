"""Workers: supervision of claimed runs (slots, dispatch, leases, cancels, time limits).

Each backend gets ``concurrency[backend]`` slots in this process. A slot claims the
next request (and compatible ones for batching backends), holds a lease that a
heartbeat renews, and hands each request to an ``Attempt`` (``openfal.attempt``), which
folds the run's events and ends the request through ``Endings`` with a compare-and-swap
on (worker, attempt): a worker that lost its lease cannot complete a request twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from openfal import metrics
from openfal.aio import wait_event
from openfal.attempt import Attempt, Attempts
from openfal.backends.base import Backend, Job, Output
from openfal.config import Settings
from openfal.endings import Endings
from openfal.errors import InternalError, RunCancelled, RunError
from openfal.media import MediaStore
from openfal.media.publish import discard_files
from openfal.models import RequestRecord
from openfal.store.hinted_claims import GRACE_SECONDS as HINT_GRACE_SECONDS
from openfal.store.media_index import MediaIndex
from openfal.store.requests import LeftForHint, RequestStore
from openfal.store.workers import WorkerRegistry
from openfal.uploads import UploadSigner

log = logging.getLogger("openfal.worker")

CANCEL_POLL_SECONDS = 1.0
#: how often a running call is checked for being stuck after its jobs were stopped
STUCK_POLL_SECONDS = 0.25
#: a claim loop with a free slot goes round at least every IDLE_CLAIM_SECONDS (5 s);
#: silent this long, it is hung (liveness fails)
CLAIM_LOOP_SILENT_SECONDS = 60.0
#: a run given up as stuck and still inside its device call this long after: the engine is hung
HUNG_ENGINE_SECONDS = 300.0
#: how often a worker leaving a hinted request to its advertiser looks whether it was taken
HINT_LOOK_SECONDS = 0.05


class Worker:
    def __init__(
        self,
        *,
        settings: Settings,
        store: RequestStore,
        endings: Endings,
        media: MediaStore,
        media_index: MediaIndex,
        backends: Mapping[str, Backend],
        worker_id: str | None = None,
        registry: WorkerRegistry | None = None,
        endpoints: frozenset[str] | None = None,
        files_signer: UploadSigner | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.endings = endings
        self.media = media
        self.media_index = media_index
        self.backends = backends
        #: the store's: what it commits wakes this worker's dispatchers and cancels its jobs
        self.notifier = store.notifier
        self.worker_id = worker_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.registry = registry
        #: a worker pool's endpoints (``--models``): only their requests are claimed (None: all)
        self.endpoints = endpoints
        self._attempts = Attempts(
            store=store,
            endings=endings,
            media=media,
            media_index=media_index,
            worker_id=self.worker_id,
            max_attempts=settings.max_attempts,
            files_signer=files_signer,
        )
        self._running: dict[str, Job] = {}
        #: request id -> seconds its run may take
        self._limits: dict[str, float] = {}
        #: backend -> (slots, the tasks of its busy slots), for the registry
        self._slots: dict[str, tuple[int, set[asyncio.Task[None]]]] = {}
        #: runs given up as stuck, still finishing in their threads -> when they were given up
        self._abandoned: dict[asyncio.Future[Sequence[Output | RunError]], float] = {}
        #: backend -> the runner hints this worker advertises (its backend's status()
        #: ``runner_hints``: loaded models and LoRAs), republished after every run
        self._hints: dict[str, tuple[str, ...]] = {}
        #: backend -> hints other live workers with a free slot advertise (from the registry)
        self._hints_elsewhere: dict[str, frozenset[str]] = {}
        #: set when this worker's hints changed: the registry hears of it at once
        self._republish = asyncio.Event()
        self._started = False
        self._stopping = asyncio.Event()
        #: set once the dispatchers have drained: the side loops may end then
        self._drained = asyncio.Event()
        #: backend -> its dispatcher task, and when its claim loop last went round
        self._dispatchers: dict[str, asyncio.Task[None]] = {}
        self._ticks: dict[str, float | None] = {}
        #: a busy slot's task -> the requests it runs (to stop them when the drain ends)
        self._slot_requests: dict[asyncio.Task[None], list[str]] = {}

    # -- supervision --------------------------------------------------------------

    async def run(self) -> None:
        """Run one dispatcher per backend and the side tasks until ``stop()``.

        Stopping is cooperative: a task cut off inside a database transaction can leave
        the connection (and SQLite's write lock) held while the rest shuts down, so the
        loops finish their current step and return. Dispatchers stop claiming and drain
        their running requests; heartbeats and cancel polls go on until they have."""
        self._dispatchers = {
            name: asyncio.create_task(self._dispatch(backend), name=f"dispatch-{name}") for name, backend in self.backends.items()
        }
        dispatchers = list(self._dispatchers.values())
        self._started = True
        sides = [
            asyncio.create_task(self._heartbeats(), name="heartbeats"),
            asyncio.create_task(self._cancel_poll(), name="cancel-poll"),
            asyncio.create_task(self._reports(), name="registry"),
        ]
        try:
            await self._stopping.wait()
        finally:
            self._stopping.set()
            await asyncio.gather(*dispatchers, return_exceptions=True)
            self._drained.set()
            self._republish.set()  # the registry loop ends now
            await asyncio.gather(*sides, return_exceptions=True)
            if self.registry is not None:
                try:
                    await self.registry.remove(self.worker_id)
                except Exception:
                    log.exception("leaving the worker registry failed")

    def stop(self) -> None:
        """Stop claiming now and drain: running requests get ``drain_seconds`` to finish,
        then what is left is handed back (see ``_dispatch``)."""
        self._stopping.set()
        # an idle dispatcher sleeps until work arrives (up to IDLE_CLAIM_SECONDS): wake it,
        # or the drain (and the hand-back of running requests) waits that long to begin
        self.notifier.work_available()

    async def _claim_gate(self, backend: Backend) -> bool:
        """Wait for the backend's claim gate (a GPU's second slot claims once the GPU is
        free); False when the worker stops first."""
        opened, stop = asyncio.ensure_future(backend.claim_gate()), asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({opened, stop}, return_when=asyncio.FIRST_COMPLETED)
        opened.cancel()
        stop.cancel()
        return not self._stopping.is_set()

    async def _dispatch(self, backend: Backend) -> None:
        """One claimer per backend hands work to free slots: an idle backend costs one
        claim per poll interval, and a new request wakes exactly one claim."""
        slots = self.settings.concurrency.get(backend.name, backend.default_concurrency)
        metrics.SLOTS.labels(backend.name).set(slots)
        free = asyncio.Semaphore(slots)
        running: set[asyncio.Task[None]] = set()
        self._slots[backend.name] = (slots, running)
        self._refresh_hints(backend)
        try:
            while self._tick(backend.name, waiting=free.locked()) and await self._slot_or_stop(free):
                self._tick(backend.name, waiting=True)  # a GPU's second slot claims once the GPU is free
                if not await self._claim_gate(backend):
                    free.release()
                    break
                self._tick(backend.name)
                taken = 1  # slots held for this claim
                try:
                    hints = self._hints.get(backend.name, ())
                    leave = LeftToOthers(self, backend.name, hints)
                    await self._leave_hinted_to_advertisers(backend.name, frozenset(leave))
                    if backend.claims_together and backend.max_batch_size == 1 and not hints and not leave:
                        taken += await self._more_free_slots(free)
                    records = await self.store.claim(
                        backends=[backend.name],
                        worker_id=self.worker_id,
                        lease_seconds=self.settings.lease_seconds,
                        batch_limit=backend.max_batch_size,
                        runs=taken,
                        endpoints=self.endpoints,
                        hints=hints,
                        leave=leave,
                    )
                except LeftForHint:  # it came between the look and the claim: look again
                    _release(free, taken)
                    continue
                except Exception:
                    log.exception("claim failed; retrying")
                    records = []
                    await asyncio.sleep(1.0)
                runs = [[record] for record in records] if backend.max_batch_size == 1 else [records] if records else []
                _release(free, taken - len(runs))
                if not records:
                    await self.notifier.wait_work(await self.store.idle_seconds(backend.name, self.settings.poll_interval_seconds))
                    # a batching backend's gather window: requests arriving together share a claim
                    await asyncio.sleep(backend.gather_seconds)
                    continue
                for run in runs:
                    task = asyncio.create_task(self._run_slot(backend, run), name=f"run-{run[0].id}")
                    running.add(task)
                    self._slot_requests[task] = [r.id for r in run]
                    task.add_done_callback(lambda t: self._slot_done(running, free, t))
        finally:
            # drain: running requests get drain_seconds to finish; what is left is handed
            # back, its runs told to stop at their next step (their results are not waited for)
            if running:
                await asyncio.wait(running, timeout=self.settings.drain_seconds)
            if running:
                log.info("drained for %g s; handing back %d running claim(s)", self.settings.drain_seconds, len(running))
            for task in running:
                for request_id in self._slot_requests.get(task, ()):
                    job = self._running.get(request_id)
                    if job is not None:
                        job.cancel()
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _leave_hinted_to_advertisers(self, backend: str, others: frozenset[str]) -> None:
        """Runner hints, best effort: while the queue holds a request hinted for what
        another live worker with a free slot advertises (``others``, and this one does
        not), younger than the grace, wait for that worker to take it; then claim as
        usual (a claim that takes such a request anyway is undone: ``LeftForHint``).
        Waits at most the grace; costs nothing while no other worker advertises a hint."""
        if not others:
            return
        give_up = time.monotonic() + HINT_GRACE_SECONDS
        while not self._stopping.is_set() and time.monotonic() < give_up:
            oldest = await self.store.hinted_elsewhere(backends=[backend], hints=sorted(others), endpoints=self.endpoints)
            if oldest is None:
                return
            await wait_event(self._stopping, min(HINT_LOOK_SECONDS, oldest + HINT_GRACE_SECONDS - time.time()))

    def _refresh_hints(self, backend: Backend) -> None:
        try:
            self._publish_hints(backend, backend.status())
        except Exception:
            log.exception("reading %s's status failed", backend.name)

    def _publish_hints(self, backend: Backend, status: dict[str, Any]) -> list[str]:
        """The hints a backend's status advertises, noted for claims; a change is
        reported to the registry at once (fal's runners re-publish theirs after every
        response)."""
        hints = sorted({str(h) for h in status.get("runner_hints") or ()})
        if tuple(hints) != self._hints.get(backend.name, ()):
            self._hints[backend.name] = tuple(hints)
            self._republish.set()
        return hints

    @staticmethod
    async def _more_free_slots(free: asyncio.Semaphore) -> int:
        """Take every other slot free now (none is waited for): they claim with this
        one, several runs from one look at the queue, whose cost grows with the keys
        waiting (one candidate query then serves them all). Only for a backend that
        ``claims_together`` (no gate holding its slots back) and does not batch."""
        more = 0
        while not free.locked():
            await free.acquire()
            more += 1
        return more

    def _slot_done(self, running: set[asyncio.Task[None]], free: asyncio.Semaphore, task: asyncio.Task[None]) -> None:
        """A slot's run ended: forget its task and its requests, give the slot back."""
        running.discard(task)
        self._slot_requests.pop(task, None)
        free.release()

    def _tick(self, backend: str, *, waiting: bool = False) -> bool:
        """The claim loop went round (``waiting``: and now waits, as long as a run may
        take, for a busy slot or the GPU to free up)."""
        self._ticks[backend] = None if waiting else time.monotonic()
        return True

    # -- health ---------------------------------------------------------------------

    @property
    def claiming(self) -> bool:
        """Whether this worker takes new work: running, not draining, every claim loop alive."""
        return self._started and not self._stopping.is_set() and not any(t.done() for t in self._dispatchers.values())

    def unhealthy(self) -> list[str]:
        """What is wrong with this worker that only a restart mends (empty: nothing): a
        claim loop that died, or has not gone round in ``CLAIM_LOOP_SILENT_SECONDS``
        while it had a free slot (one waiting for a busy slot or the GPU waits rightly),
        or an engine that does not answer: a run given up as stuck that still has not
        returned ``HUNG_ENGINE_SECONDS`` later is a hung device call, and the device
        stays held until the process ends."""
        now, problems = time.monotonic(), []
        for name, task in self._dispatchers.items():
            tick = self._ticks.get(name)
            if task.done() and not self._stopping.is_set():
                problems.append(f"{name}: the claim loop ended")
            elif tick is not None and now - tick > CLAIM_LOOP_SILENT_SECONDS:
                problems.append(f"{name}: the claim loop has not gone round for {now - tick:.0f} s")
        for since in self._abandoned.values():
            if now - since > HUNG_ENGINE_SECONDS:
                problems.append(f"a run given up as stuck {now - since:.0f} s ago has not returned: the engine does not answer")
        return problems

    async def _slot_or_stop(self, free: asyncio.Semaphore) -> bool:
        """Wait for a free slot (True, the slot taken) or for ``stop()`` (False)."""
        if self._stopping.is_set():
            return False
        if not free.locked():  # free now: taken without waiting (two tasks and a wait per claim otherwise)
            return await free.acquire()
        acquire = asyncio.ensure_future(free.acquire())
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not acquire.done():
            acquire.cancel()
            await asyncio.gather(acquire, return_exceptions=True)
        got = acquire.done() and not acquire.cancelled()
        if got and self._stopping.is_set():
            free.release()
            return False
        return got

    async def _run_slot(self, backend: Backend, records: Sequence[RequestRecord]) -> None:
        for record in records:
            metrics.record_start(record)
        busy = metrics.BUSY.labels(backend.name)
        busy.inc()
        try:
            await self.run_claimed(backend, records)
        except Exception:
            log.exception("running %s failed", [r.id for r in records])
        finally:
            busy.dec()
            self._refresh_hints(backend)  # a run may have loaded a model or a LoRA

    async def _heartbeats(self) -> None:
        while not self._drained.is_set():
            await wait_event(self._drained, self.settings.heartbeat_seconds)
            try:
                await self.store.heartbeat(self.worker_id, list(self._running), self.settings.lease_seconds)
            except Exception:
                log.exception("heartbeat failed")

    async def _reports(self) -> None:
        """Report this process to the worker registry until it has drained."""
        if self.registry is None:
            return
        started, hostname = time.time(), socket.gethostname()
        while not self._drained.is_set():
            self._republish.clear()
            try:
                await self.registry.report(self.worker_id, hostname=hostname, pid=os.getpid(), started_at=started, backends=self._report())
                self._hints_elsewhere = hints_elsewhere(await self.registry.listing(include_gone=False), self.worker_id)
            except Exception:
                log.exception("reporting to the worker registry failed")
            await wait_event(self._republish, self.settings.heartbeat_seconds)

    def _report(self) -> dict[str, Any]:
        report: dict[str, Any] = {}
        for name, backend in self.backends.items():
            slots, busy = self._slots.get(name, (0, set()))
            try:
                status = backend.status()
            except Exception as exc:
                status = {"error": f"{type(exc).__name__}: {exc}"}
            report[name] = {
                "slots": slots,
                "busy": len(busy),
                "status": status,
                # the endpoints it claims (None: all): the console counts its slots in the pool they make
                "endpoints": sorted(self.endpoints) if self.endpoints is not None else None,
                "hints": self._publish_hints(backend, status),
            }
        return report

    def _run_limit(self, backend: Backend) -> float:
        """A backend with its own overall deadline (a relay) says so; others get the setting."""
        own = backend.max_run_seconds
        return float(own) if own else self.settings.max_run_seconds

    def _stop_overruns(self) -> None:
        now = time.monotonic()
        for job in list(self._running.values()):
            limit = self._limits.get(job.request_id, self.settings.max_run_seconds)
            if not job.timed_out and now - job.started > limit:
                log.warning("%s ran past the %g s limit; stopping it", job.request_id, limit)
                job.timed_out = True
                job.cancel()

    async def _cancel_poll(self) -> None:
        """Cancels asked for through another process reach our running jobs here, and
        runs past their time limit are stopped."""
        while not self._drained.is_set():
            await wait_event(self._drained, CANCEL_POLL_SECONDS)
            if not self._running:
                continue
            self._stop_overruns()
            try:
                for request_id in await self.store.cancel_requested(self.worker_id):
                    job = self._running.get(request_id)
                    if job is not None:
                        job.cancel()
            except Exception:
                log.exception("cancel poll failed")

    # -- one claimed batch ----------------------------------------------------------

    async def run_claimed(self, backend: Backend, records: Sequence[RequestRecord]) -> None:
        """Run a claimed batch and end each request. The requests stay in ``_running``
        (so the heartbeat keeps renewing their leases) until they have ended: storing a
        result's media is part of the run, and a lease that lapsed while a slow media
        store wrote would let the reaper requeue the request and run it twice."""
        limit = self._run_limit(backend)
        attempts = [self._track(self._attempts.begin(record), limit) for record in records]
        started = time.monotonic()
        try:
            results = await self._call(backend, [attempt.job for attempt in attempts])
            elapsed = time.monotonic() - started
            for attempt in attempts:
                await attempt.events.close()
            for attempt, result in zip(attempts, results, strict=True):  # _call answers one result per job
                await attempt.end(result, elapsed=elapsed, run_limit=limit)
        except asyncio.CancelledError:
            # shutting down mid-run: give the requests back now instead of at lease expiry
            for attempt in attempts:
                await asyncio.shield(attempt.hand_back())
            raise
        finally:
            for record in records:
                self._running.pop(record.id, None)
                self._limits.pop(record.id, None)
                self.notifier.forget_cancel(record.id)

    def _track(self, attempt: Attempt, limit: float) -> Attempt:
        """Put the attempt's job under supervision: leases, cancels and the time limit."""
        job = attempt.job
        self._running[job.request_id] = job
        self._limits[job.request_id] = limit
        self.notifier.on_cancel(job.request_id, job.cancel)
        return attempt

    async def _call(self, backend: Backend, jobs: list[Job]) -> Sequence[Output | RunError]:
        run = asyncio.ensure_future(backend.run(jobs))
        try:
            finished = await self._finished_or_stuck(run, jobs)
        except asyncio.CancelledError:
            run.cancel()
            raise
        if not finished:
            self._abandon(backend, run, jobs)
            return [RunCancelled()] * len(jobs)  # the attempt names a time limit for what timed out
        try:
            results = run.result()
        except RunError as exc:
            return [exc] * len(jobs)
        except Exception as exc:
            log.exception("backend %s crashed on %s", backend.name, [j.request_id for j in jobs])
            return [InternalError(f"The {backend.name} backend failed: {type(exc).__name__}: {exc}")] * len(jobs)
        if len(results) != len(jobs):
            return [InternalError(f"The {backend.name} backend returned {len(results)} results for {len(jobs)} requests")] * len(jobs)
        return results

    async def _finished_or_stuck(self, run: asyncio.Future[Sequence[Output | RunError]], jobs: list[Job]) -> bool:
        """True once the run returns; False when every job of it was cancelled (by the
        client or the time limit) and the run still has not returned ``stuck_run_grace_seconds``
        later: it is stuck inside one step (a huge image, a hung device call), where
        cooperative cancel cannot reach it."""
        grace = self.settings.stuck_run_grace_seconds
        cancelled_since: float | None = None
        while True:
            done, _ = await asyncio.wait({run}, timeout=min(STUCK_POLL_SECONDS, grace))
            if done:
                return True
            if not all(job.cancelled for job in jobs):
                cancelled_since = None
            elif cancelled_since is None:
                cancelled_since = time.monotonic()
            elif time.monotonic() - cancelled_since >= grace:
                return False

    def _abandon(self, backend: Backend, run: asyncio.Future[Sequence[Output | RunError]], jobs: list[Job]) -> None:
        """Give up on a stuck run: its requests end now and the slot is free; the run
        finishes in the background (its thread cannot be killed) and what it returns is
        discarded. The backend's own lock keeps the next run off the device until then."""
        ids = [job.request_id for job in jobs]
        log.warning("%s: still inside a step %g s after being stopped; ending the request(s) and discarding the run", ids, self.settings.stuck_run_grace_seconds)
        metrics.ABANDONED_RUNS.labels(backend.name).inc()
        self._abandoned[run] = time.monotonic()

        def finished(done: asyncio.Future[Sequence[Output | RunError]]) -> None:
            self._abandoned.pop(done, None)
            if done.cancelled() or done.exception() is not None:
                log.info("abandoned run of %s ended without a result", ids)
                return
            for result in done.result():
                if isinstance(result, Output):
                    discard_files(result.payload)
            log.info("abandoned run of %s returned; its result was discarded", ids)

        run.add_done_callback(finished)


class LeftToOthers(Collection[str]):
    """A claim's ``leave``: the runner hints free workers elsewhere advertise and this one
    does not, as this worker knows them when the claim checks what it took, not when the
    claim began. A claim under way when the worker hears of an advertiser (its registry
    refresh runs beside the claim) then still leaves the advertiser's requests to it."""

    def __init__(self, worker: Worker, backend: str, own: Sequence[str]) -> None:
        self._worker, self._backend, self._own = worker, backend, frozenset(own)

    def _now(self) -> frozenset[str]:
        return self._worker._hints_elsewhere.get(self._backend, frozenset()) - self._own

    def __contains__(self, hint: object) -> bool:
        return hint in self._now()

    def __iter__(self) -> Iterator[str]:
        return iter(self._now())

    def __len__(self) -> int:
        return len(self._now())


def hints_elsewhere(live: Sequence[dict[str, Any]], me: str) -> dict[str, frozenset[str]]:
    """backend -> the runner hints other live workers advertise while they have a free
    slot (as they last reported)."""
    out: dict[str, set[str]] = {}
    for worker in live:
        if worker["id"] == me:
            continue
        for backend, info in (worker.get("backends") or {}).items():
            if int(info.get("busy", 0)) < int(info.get("slots", 0)):
                out.setdefault(backend, set()).update(info.get("hints") or ())
    return {backend: frozenset(hints) for backend, hints in out.items()}


def _release(free: asyncio.Semaphore, slots: int) -> None:
    for _ in range(slots):
        free.release()
