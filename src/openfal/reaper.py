"""The reaper: leases that expired (their worker died), start deadlines that passed,
the hourly rollup of charge rows the Platform API reports read, and retention. Runs in every process that runs workers; all of its moves are
compare-and-swaps, so several reapers at once are harmless."""

from __future__ import annotations

import asyncio
import logging
import time

from openfal.aio import wait_event
from openfal.config import Settings
from openfal.endings import Endings
from openfal.errors import RunCancelled, RunnerLost, StartTimeout
from openfal.media import MediaStore
from openfal.models import Status
from openfal.store import rollup
from openfal.store.media_index import MediaIndex
from openfal.store.requests import RequestStore
from openfal.store.workers import WorkerRegistry
from openfal.uploads import TICKET_SECONDS

log = logging.getLogger("openfal.reaper")

#: sweeps are at least this far apart (a busy queue wakes the reaper at every submit)
SWEEP_SECONDS = 1.0
#: with no lease or deadline due sooner, the reaper looks again after this long (or
#: the lease time, if shorter: another process's claims do not wake it)
IDLE_SWEEP_SECONDS = 10.0
#: results of requests sent with X-Fal-Store-IO: 0 are kept this long (fal: 1 hour)
UNSTORED_RESULT_TTL_SECONDS = 3600.0
#: multipart uploads not completed this long after they began are aborted (their
#: signed URLs expire after an hour)
STALE_UPLOAD_SECONDS = TICKET_SECONDS + 600.0
#: killed workers stay listed (as not alive) this long
GONE_WORKER_SECONDS = 3600.0


class Reaper:
    def __init__(
        self,
        *,
        settings: Settings,
        store: RequestStore,
        endings: Endings,
        media: MediaStore,
        media_index: MediaIndex,
        registry: WorkerRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.endings = endings
        self.media = media
        self.media_index = media_index
        self.registry = registry
        self._stop = asyncio.Event()
        #: set by new work (its start deadline may be the next thing due) and by stop()
        self._wake = asyncio.Event()
        store.notifier.on_work(self._wake.set)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Sweep until ``stop()``, which lets the current sweep finish: when the next
        lease or deadline is due, when new work arrives, and at least every
        ``IDLE_SWEEP_SECONDS``, never more than once per ``SWEEP_SECONDS``; an idle
        server does not look every second."""
        last_retention = 0.0
        while not self._stop.is_set():
            swept_at = time.monotonic()
            self._wake.clear()  # before the sweep: work arriving during it is not missed
            wait = SWEEP_SECONDS
            try:
                await self.sweep()
                if swept_at - last_retention > self.settings.maintenance_interval_seconds:
                    await self.retention()
                    last_retention = time.monotonic()
                wait = await self._until_due(last_retention)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("maintenance sweep failed")
            await wait_event(self._wake, wait - (time.monotonic() - swept_at))
            await wait_event(self._stop, SWEEP_SECONDS - (time.monotonic() - swept_at))

    async def _until_due(self, last_retention: float) -> float:
        """Seconds from now until the next sweep is due (the next lease or deadline,
        the next retention, or the idle limit, whichever is first)."""
        idle = min(IDLE_SWEEP_SECONDS, self.settings.lease_seconds)
        retention = last_retention + self.settings.maintenance_interval_seconds - time.monotonic()
        due = await self.store.next_reap_at()
        until_due = idle if due is None else due - time.time() + 0.01
        return max(min(idle, retention, until_due), 0.0)

    async def sweep(self) -> None:
        now = time.time()
        for record in await self.store.expired_leases(now):
            if record.cancel_requested:
                await self.endings.fail(record, RunCancelled(), attempt=record.attempts, lease_expired_before=now)
            elif record.may_retry(self.settings.max_attempts):
                if await self.store.requeue(record, lease_expired_before=now):
                    log.warning("lease of %s expired; attempt %d of %d queued", record.id, record.attempts + 1, self.settings.max_attempts)
            else:
                times = "and X-Fal-No-Retry was set" if record.no_retry else f"{record.attempts} times"
                error = RunnerLost(f"The worker running this request stopped answering {times}")
                await self.endings.fail(record, error, attempt=record.attempts, lease_expired_before=now)
        for record in await self.store.missed_deadlines(now):
            await self.endings.fail(record, StartTimeout(), expect=Status.IN_QUEUE)
        # the requests settled since the last sweep: reports read them raw until then
        await rollup.roll(self.store.db)

    async def retention(self) -> None:
        now = time.time()
        purged = await self.store.purge_completed_before(
            now - self.settings.result_ttl_seconds, unstored_cutoff=now - UNSTORED_RESULT_TTL_SECONDS
        )
        expired = await self.media_index.expire(self.media, now)
        abandoned = await self.media.purge_stale_uploads(now - STALE_UPLOAD_SECONDS)
        if self.registry is not None:
            await self.registry.forget_before(now - GONE_WORKER_SECONDS)
        if purged or expired or abandoned:
            log.info("retention: %d requests, %d media files and %d unfinished uploads removed", purged, expired, abandoned)
