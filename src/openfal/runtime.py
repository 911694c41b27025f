"""Wiring: builds every part of a deployment from ``Settings`` and runs the
background tasks a process needs (workers, reaper, webhook deliverer)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from openfal.accounting import Accounts, PriceList
from openfal.auth import Authenticator
from openfal.backends.base import Backend
from openfal.backends.builtin import BuiltinBackend
from openfal.backends.relay import make_relay_backends
from openfal.config import Settings
from openfal.endings import Endings
from openfal.media import MediaStore, open_media
from openfal.notify import Notifier
from openfal.pools import endpoints_of, pool_endpoints
from openfal.reaper import Reaper
from openfal.routing import Router
from openfal.service import QueueService
from openfal.store.api_keys import KeyStore
from openfal.store.db import Database
from openfal.store.listener import ChangeFeed, change_feed
from openfal.store.media_index import MediaIndex
from openfal.store.outbox import OutboxStore
from openfal.store.pools import PoolStore
from openfal.store.requests import RequestStore
from openfal.store.workers import WorkerRegistry
from openfal.uploads import UploadSigner
from openfal.webhooks import Signer, WebhookDeliverer
from openfal.worker import Worker

log = logging.getLogger("openfal")


def make_backends(settings: Settings, *, media: MediaStore | None = None) -> dict[str, Backend]:
    """Every backend this deployment can route to (built lazily: no model loads here),
    those that fetch reading our own media URLs from ``media`` (the runtime's store)."""
    backends: dict[str, Backend] = {"builtin": BuiltinBackend()}
    try:
        from openfal.backends.local import LocalBackend
    except ImportError as exc:  # a relay-only install may leave out torch and diffusers
        log.warning("local backend unavailable (%s); local endpoints are not served", exc)
    else:
        backends["local"] = LocalBackend(settings, media=media)
    backends.update(make_relay_backends(settings, existing={"builtin", "local"}, media=media))  # one per upstream
    return backends


#: how long the reaper and the webhook deliverer get to finish their step at stop
STOP_SECONDS = 5.0


class Runtime:
    def __init__(self, settings: Settings, *, backends: dict[str, Backend] | None = None) -> None:
        self.settings = settings
        self.db = Database(settings.effective_database_url)
        self.notifier = Notifier()
        self.requests = RequestStore(self.db, default_key_concurrency=settings.default_key_max_concurrent, notifier=self.notifier)
        self.keys = KeyStore(self.db)
        self.outbox = OutboxStore(self.db, self.requests.changes)
        self.registry = WorkerRegistry(self.db, alive_seconds=3 * settings.heartbeat_seconds)
        self.media = open_media(settings)
        self.media_index = MediaIndex(self.db, settings.media_ttl_seconds)
        self.accounts = Accounts(PriceList(settings.prices))
        self.endings = Endings(self.requests, self.accounts)
        self.backends = backends if backends is not None else make_backends(settings, media=self.media)
        self.router = Router(
            settings.routes,
            set(self.backends),
            commercial_only=settings.commercial_only,
            licensed_models=frozenset(settings.licensed_models),
        )
        self.auth = Authenticator(self.keys, enabled=settings.auth_enabled)
        self.service = QueueService(
            settings=settings,
            store=self.requests,
            router=self.router,
            backends=self.backends,
            endings=self.endings,
            accounts=self.accounts,
            registry=self.registry,
        )
        self.worker: Worker | None = None
        #: every worker of this process (``worker`` and, under ``--gpus``, one per GPU)
        self.workers: list[Worker] = []
        self.signer: Signer | None = None
        self.uploads: UploadSigner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._listener: ChangeFeed | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._stoppers: list[Callable[[], None]] = []
        #: ``--gpus``: the supervisor of one worker process per GPU (gpu_workers.py)
        self.gpu_workers: Any = None
        #: the endpoints this process's workers serve (``worker_models``; None: all)
        self.worker_endpoints = endpoints_of(settings.worker_models) if settings.worker_models else None
        #: ``OPENFAL_POOLS`` resolved, pool -> endpoint ids (the view KEDA reads counts by them)
        self.pools = pool_endpoints(settings.pools)
        self.pool_queues = PoolStore(self.db)

    async def start(self, *, workers: bool) -> None:
        await self.db.migrate()
        if self.pools:
            await self.pool_queues.define(self.pools)
        self._listener = change_feed(
            self.db,
            self.notifier,
            self.requests.views,
            database_url=self.settings.effective_database_url,
            interval=self.settings.poll_interval_seconds,
        )
        self._listener.start()
        self.signer = await Signer.load(self.db)
        self.uploads = await UploadSigner.load(self.db)
        if workers:
            await self._start_loops()

    async def _start_loops(self) -> None:
        """Start the backends this process runs, and the workers, reaper and webhook
        deliverer as tasks."""
        run_backends = self._run_backends()
        for backend in run_backends.values():
            await backend.start()
        self.worker = self._worker(run_backends, worker_id=self.settings.worker_id)
        self.workers = [self.worker]
        reaper = Reaper(
            settings=self.settings,
            store=self.requests,
            endings=self.endings,
            media=self.media,
            media_index=self.media_index,
            registry=self.registry,
        )
        assert self.signer is not None
        deliverer = WebhookDeliverer(settings=self.settings, outbox=self.outbox, requests=self.requests, signer=self.signer)
        self._closers.append(deliverer.close)
        self.notifier.on_webhooks(deliverer.wake.set)
        self._stoppers = [self.worker.stop, reaper.stop, deliverer.stop]
        loops = [("worker", self.worker.run())]
        if self.gpu_workers is not None:
            self._stoppers.append(self.gpu_workers.stop)
            loops.append(("worker", self.gpu_workers.run()))
        for name, coro in [*loops, ("reaper", reaper.run()), ("webhooks", deliverer.run())]:
            self._tasks.append(asyncio.create_task(coro, name=name))
        for task in self._tasks:
            task.add_done_callback(_report_crash)

    def _run_backends(self) -> dict[str, Backend]:
        """The backends this process's worker runs (``worker_backends``, and of those the
        ones serving ``worker_models``' endpoints); under ``--gpus`` the local one runs in
        one worker process per GPU instead, supervised here."""
        serving = set(self.backends) if self.worker_endpoints is None else self._backends_of(self.worker_endpoints)
        run_backends = {
            name: backend
            for name, backend in self.backends.items()
            if (not self.settings.worker_backends or name in self.settings.worker_backends) and name in serving
        }
        if self.settings.gpus and "local" in run_backends:
            from openfal.gpu_workers import GpuWorkers

            run_backends.pop("local")
            self.gpu_workers = GpuWorkers(self.settings, self.requests, self.registry)
        return run_backends

    def _backends_of(self, endpoints: frozenset[str]) -> set[str]:
        """The backends that serve these endpoints (as submits are routed)."""
        return {self.router.resolve(endpoint).backend for endpoint in endpoints}

    def _worker(self, backends: dict[str, Backend], *, worker_id: str | None = None) -> Worker:
        return Worker(
            settings=self.settings,
            store=self.requests,
            endings=self.endings,
            media=self.media,
            media_index=self.media_index,
            backends=backends,
            registry=self.registry,
            worker_id=worker_id,
            endpoints=self.worker_endpoints,
            files_signer=self.uploads,
        )

    def warming(self) -> list[str]:
        """Backends of this process still warming up their preloaded models (per-GPU
        worker processes report theirs in the worker registry)."""
        return [backend.label or name for name, backend in self.backends.items() if not backend.ready]

    async def stop(self) -> None:
        """Ask every loop to stop and let it finish its step (the worker drains its
        running requests within the grace period); cancel only what overstays."""
        for stop in self._stoppers:
            stop()
        worker = [t for t in self._tasks if t.get_name() == "worker"]
        others = [t for t in self._tasks if t.get_name() != "worker"]
        await asyncio.gather(*worker, return_exceptions=True)
        if others:
            _, late = await asyncio.wait(others, timeout=STOP_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
        for close in self._closers:
            await close()
        if self._listener is not None:
            await self._listener.close()
        for backend in self.backends.values():
            await backend.close()
        await self.media.close()
        await self.db.close()


def _report_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s crashed", task.get_name(), exc_info=task.exception())
