"""One worker process per GPU: ``openfal worker --gpus all|0,1`` and ``serve --gpus``.

Every listed GPU gets a worker process of its own, started as ``openfal worker`` with
``CUDA_VISIBLE_DEVICES`` naming that GPU alone (so ``cuda:0`` in the child is the card,
``torch.cuda.empty_cache`` and the current device are that card's, and dynamo's and
inductor's process-wide state, the GIL and the allocator are that GPU's alone). The
child claims ``local`` requests independently and reports itself to the worker registry
as ``{hostname}-gpuN-...`` with its device, its loaded models and its memory (the
engine's status, labelled ``gpuN``).

This process supervises them: a child that exits while the supervisor runs has the
leases of the requests it held released at once (they go back to the queue instead of
waiting for the lease to lapse), its registry entry removed, and is started again after
a back-off (1 s, doubling to 60 s while it keeps dying within a minute). At stop each
child gets SIGTERM (it drains as ``openfal worker`` does) and SIGKILL past the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openfal.config import Settings
from openfal.errors import ConfigError
from openfal.store.requests import RequestStore
from openfal.store.workers import WorkerRegistry

log = logging.getLogger("openfal")

#: seconds between a child's death and its restart, doubling up to the maximum while it
#: keeps dying within STABLE_SECONDS of starting
FIRST_BACKOFF, MAX_BACKOFF, STABLE_SECONDS = 1.0, 60.0, 60.0
#: settings a child never inherits (the supervisor sets them per child)
PER_CHILD = frozenset({"gpus", "device", "worker_backends", "worker_id", "gpu_label", "in_process_workers"})


def cuda_device_count() -> int:
    """GPUs torch sees on this host (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


#: the device a child uses: the one GPU its CUDA_VISIBLE_DEVICES shows it
CHILD_DEVICE = "cuda:0"


def resolve_gpus(spec: str, count: Callable[[], int] | None = None) -> list[int]:
    """``""`` -> [] (one engine on ``OPENFAL_DEVICE``, in process); ``all`` -> every GPU;
    ``0,1`` -> those GPUs (each must exist, once)."""
    text = spec.strip()
    if not text:
        return []
    available = (count or cuda_device_count)()
    if available == 0:
        raise ConfigError(f"--gpus {text}: torch sees no CUDA device on this host")
    if text == "all":
        return list(range(available))
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--gpus {text!r}: use all, or GPU indices such as 0,1") from None
    bad = [i for i in indices if not 0 <= i < available]
    if bad or len(set(indices)) != len(indices) or not indices:
        raise ConfigError(f"--gpus {text!r}: this host has GPUs 0..{available - 1}, each listed once")
    return indices


def child_environment(settings: Settings, gpu: int, worker_id: str, device: str) -> dict[str, str]:
    """The environment of GPU ``gpu``'s worker: this process's, the settings this
    process was given (so CLI options and test settings reach the child), and the
    child's own device, label, id and backend."""
    env = dict(os.environ)
    values = settings.model_dump(mode="json")
    for name, _info in Settings.model_fields.items():
        value = values.get(name)
        if name in PER_CHILD or value is None or name not in settings.model_fields_set:
            continue
        env[f"OPENFAL_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env.update(
        CUDA_VISIBLE_DEVICES=str(gpu),
        OPENFAL_DEVICE=device,
        OPENFAL_GPUS="",
        OPENFAL_WORKER_BACKENDS='["local"]',
        OPENFAL_WORKER_ID=worker_id,
        OPENFAL_GPU_LABEL=f"gpu{gpu}",
    )
    return env


@dataclass
class Child:
    gpu: int
    worker_id: str = ""
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    backoff: float = FIRST_BACKOFF
    restarts: int = 0
    history: list[int] = field(default_factory=list)


class GpuWorkers:
    """Starts, watches and restarts one ``openfal worker`` process per GPU.

    ``device_count`` enumerates the GPUs and ``child_device`` is the device a child
    runs on (``cuda:0``: the one GPU it sees); tests fake the enumeration and run the
    children on ``cpu``.
    """

    def __init__(
        self,
        settings: Settings,
        store: RequestStore,
        registry: WorkerRegistry | None,
        *,
        device_count: Callable[[], int] | None = None,
        child_device: str | None = None,
        python: str = sys.executable,
        grace_seconds: float | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.children = [Child(gpu) for gpu in resolve_gpus(settings.gpus, device_count)]
        self.child_device = child_device or CHILD_DEVICE
        self.python = python
        self.grace_seconds = grace_seconds if grace_seconds is not None else settings.drain_seconds + 10
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Run every child until ``stop``; restart the ones that exit meanwhile."""
        await asyncio.gather(*(self._keep(child) for child in self.children))

    def stop(self) -> None:
        self._stopping.set()
        for child in self.children:
            if child.process is not None and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)

    def status(self) -> list[dict[str, Any]]:
        return [
            {"gpu": c.gpu, "worker_id": c.worker_id, "pid": c.process.pid if c.process else None, "restarts": c.restarts}
            for c in self.children
        ]

    async def _keep(self, child: Child) -> None:
        while not self._stopping.is_set():
            await self._start(child)
            assert child.process is not None
            code = await child.process.wait()
            child.history.append(code)
            if self._stopping.is_set():
                break
            log.warning("gpu%d worker %s (pid %d) exited with %s; releasing its requests and restarting", child.gpu, child.worker_id, child.process.pid, code)
            await self._release(child.worker_id)
            child.backoff = FIRST_BACKOFF if time.monotonic() - child.started > STABLE_SECONDS else min(MAX_BACKOFF, child.backoff * 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), child.backoff)
            child.restarts += 1
        await self._finish(child)

    async def _start(self, child: Child) -> None:
        child.worker_id = f"{socket.gethostname()[:40]}-gpu{child.gpu}-{uuid.uuid4().hex[:8]}"
        env = child_environment(self.settings, child.gpu, child.worker_id, self.child_device)
        child.process = await asyncio.create_subprocess_exec(self.python, "-m", "openfal", "worker", env=env)
        child.started = time.monotonic()
        log.info("gpu%d: worker %s started (pid %d)", child.gpu, child.worker_id, child.process.pid)

    async def _finish(self, child: Child) -> None:
        """At stop: wait for the child to drain, kill it past the grace period."""
        process = child.process
        if process is None:
            return
        if process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), self.grace_seconds)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                await self._release(child.worker_id)

    async def _release(self, worker_id: str) -> None:
        """Give the dead worker's requests back to the queue and drop its registry entry."""
        try:
            for record in await self.store.held_by(worker_id):
                await self.store.requeue(record)
            if self.registry is not None:
                await self.registry.remove(worker_id)
        except Exception:  # the lease reaper gives them back later anyway
            log.exception("releasing the requests of worker %s failed", worker_id)
