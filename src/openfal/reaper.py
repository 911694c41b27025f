"""The reaper: leases that expired (their worker died), start deadlines that passed,
and retention. Runs in every process that runs workers; all of its moves are
compare-and-swaps, so several reapers at once are harmless."""

from __future__ import annotations

import asyncio
import logging
import time

from openfal.aio import wait_event
from openfal.config import Settings
from openfal.errors import RunCancelled, RunnerLost, StartTimeout
from openfal.lifecycle import Lifecycle
from openfal.media import MediaStore
from openfal.models import Status
from openfal.notify import Notifier
from openfal.store.media_index import MediaIndex
from openfal.store.requests import RequestStore
from openfal.store.workers import WorkerRegistry
from openfal.uploads import TICKET_SECONDS

log = logging.getLogger("openfal.reaper")

SWEEP_SECONDS = 1.0
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
        lifecycle: Lifecycle,
        notifier: Notifier,
        media: MediaStore,
        media_index: MediaIndex,
        registry: WorkerRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.lifecycle = lifecycle
        self.notifier = notifier
        self.media = media
        self.media_index = media_index
        self.registry = registry
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Sweep until ``stop()``, which lets the current sweep finish."""
        last_retention = 0.0
        while not self._stop.is_set():
            try:
                await self.sweep()
                if time.monotonic() - last_retention > self.settings.maintenance_interval_seconds:
                    await self.retention()
                    last_retention = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("maintenance sweep failed")
            await wait_event(self._stop, SWEEP_SECONDS)

    async def sweep(self) -> None:
        now = time.time()
        for record in await self.store.expired_leases(now):
            if record.cancel_requested:
                await self.lifecycle.fail(record, RunCancelled(), attempt=record.attempts, lease_expired_before=now)
            elif record.may_retry(self.settings.max_attempts):
                if await self.store.requeue(record, lease_expired_before=now):
                    log.warning("lease of %s expired; attempt %d of %d queued", record.id, record.attempts + 1, self.settings.max_attempts)
                    self.notifier.changed(record.id)
                    self.notifier.work_available()
            else:
                times = "and X-Fal-No-Retry was set" if record.no_retry else f"{record.attempts} times"
                error = RunnerLost(f"The worker running this request stopped answering {times}")
                await self.lifecycle.fail(record, error, attempt=record.attempts, lease_expired_before=now)
        for record in await self.store.missed_deadlines(now):
            await self.lifecycle.fail(record, StartTimeout(), expect=Status.IN_QUEUE)

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
