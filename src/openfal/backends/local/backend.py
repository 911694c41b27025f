"""``LocalBackend``: the model families' endpoints run in-process with diffusers.

The async side lives here: grouping a claimed batch, handing each group to its family
(``families/``: fetching input images, the pipeline call, the result), turning failures
into per-job ``RunError``s. The blocking side (models, the device) is the
``Engine``, reached through ``asyncio.to_thread``. torch and diffusers are imported only
when the first job runs (or at ``start``), so an API process that only computes batch
keys never loads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx

from openfal.backends.base import Job, Output
from openfal.backends.local.families import BY_ENDPOINT, family_of
from openfal.backends.local.limits import PixelCap
from openfal.backends.local.lora_files import LoraFiles, pickle_refusal
from openfal.backends.local.options import LocalOptions
from openfal.config import Settings
from openfal.errors import InputInvalid, ModelUnavailable, RunCancelled, RunError

if TYPE_CHECKING:
    import torch

    from openfal.backends.local.acceleration import Acceleration
    from openfal.backends.local.engine import Engine
    from openfal.backends.local.safety import SafetyChecker
    from openfal.media import MediaStore

log = logging.getLogger("openfal.local")

#: how often a closed claim gate looks again at runs that may have been stopped
GATE_POLL_SECONDS = 0.25


@dataclasses.dataclass(eq=False)
class _GpuToken:
    """A run's claim on the GPU: its groups still to run their engine call."""

    groups_left: int
    jobs: list[Job]
    left: bool = False

    def live(self) -> bool:
        """Still on (or waiting for) the GPU for someone: a run whose requests were all
        cancelled or timed out no longer holds the gate (the worker may have given it up
        as stuck; the engine's lock still keeps the next run off the device)."""
        return not self.left and any(not job.cancelled for job in self.jobs)


#: the token of the run this task is in (set by ``LocalBackend.run``)
_GPU_TOKEN: contextvars.ContextVar[_GpuToken | None] = contextvars.ContextVar("openfal_gpu_token", default=None)
SERVED = frozenset(BY_ENDPOINT)


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """What a family checks at submit: the pixel cap and LoRA paths (a family refuses
    at submit what its run would refuse)."""

    pixel_cap: PixelCap

    def pixels(self, width: int, height: int, images: int) -> None:
        self.pixel_cap.check(width, height, images)

    def video(self, width: int, height: int, frames: int) -> None:
        self.pixel_cap.check_video(width, height, frames)

    def loras(self, paths: Sequence[str]) -> None:
        for index, path in enumerate(paths):
            if (refusal := pickle_refusal(path)) is not None:
                raise InputInvalid.field(f"loras.{index}.path", refusal, "lora_invalid")


class Settled(NamedTuple):
    """What a started backend settled without building its engine."""

    device: torch.device
    dtype: torch.dtype
    acceleration: Acceleration


class LocalBackend:
    """The ``local`` backend (see the Backend protocol in ``openfal.backends.base``).

    ``options`` sets what fal's schemas leave to the server (Kontext steps and area, LTX
    size); ``safety_checker`` replaces the one configured in settings (tests);
    ``http_client`` is used for input fetches instead of a guarded client of its own;
    ``media`` (the runtime's store, borrowed) is where that client reads our own media
    URLs from (without one, the client opens a store of its own).
    """

    name = "local"
    default_concurrency = 1
    max_run_seconds: float | None = None

    def __init__(
        self,
        settings: Settings,
        *,
        options: LocalOptions | None = None,
        safety_checker: SafetyChecker | None = None,
        http_client: httpx.AsyncClient | None = None,
        media: MediaStore | None = None,
        device: str | None = None,
        label: str | None = None,
        acceleration: Acceleration | None = None,
    ) -> None:
        self.settings = settings
        #: the engine's device (one backend per GPU under ``--gpus``); None: settings.device
        self.device = device
        self.label = label
        #: overrides the profile from settings (tests: int8 weight-only standing in for fp8)
        self.acceleration = acceleration
        self._warmup: asyncio.Task[None] | None = None
        #: runs claimed and not yet past their engine call (see claim_gate)
        self._on_gpu: set[_GpuToken] = set()
        self._gpu_free: asyncio.Condition | None = None
        self.options = dataclasses.replace(options or LocalOptions(), batch_max_pixels=settings.batch_max_pixels)
        self.max_batch_size = settings.max_batch_size
        #: the worker's gather window before claiming (only worth it when batching)
        self.gather_seconds = settings.batch_gather_ms / 1000 if self.max_batch_size > 1 else 0.0
        #: a second slot waits for the GPU (``claim_gate``), so slots never claim together
        self.claims_together = False
        self.pixel_cap = PixelCap.from_settings(settings)
        self.lora_files = LoraFiles(settings)
        self._safety_checker = safety_checker
        self._client = http_client
        self.media = media
        self._own_client: httpx.AsyncClient | None = None
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        #: what ``start`` settled: the engine is built with its device and acceleration profile,
        #: and all three are reported until it is
        self._settled: Settled | None = None

    # -- Backend protocol ------------------------------------------------------------------

    def admit(self, endpoint_id: str, input: dict[str, Any]) -> None:
        """Outputs past the pixel cap are refused at submit (see ``limits``)."""
        family = family_of(endpoint_id)
        if family is None:
            return
        try:
            family.admit(endpoint_id, input, self.options, Limits(self.pixel_cap))
        except (KeyError, TypeError, ValueError):
            return  # the run reports what is wrong with the input

    def batch_key(self, endpoint_id: str, input: dict[str, Any]) -> str | None:
        """Text-to-image requests of one endpoint, size, step count and guidance share a
        pipeline call; requests with input images run alone."""
        family = family_of(endpoint_id)
        if family is None or self.max_batch_size <= 1:
            return None
        try:
            return family.batch_key(endpoint_id, input, self.options)
        except (KeyError, TypeError, ValueError):
            return None

    async def start(self) -> None:
        """Settle the device, dtype and acceleration profile (a bad OPENFAL_DEVICE fails
        here; torch alone is imported), then, when ``OPENFAL_PRELOAD_MODELS`` names models,
        build the engine and load and warm them in the background: the server answers
        meanwhile, ``ready`` is false until it ends, and runs wait for it. Otherwise the
        engine is built by the first run: its imports (diffusers, transformers, PEFT) cost
        some 5 s of CPU, which an API process or a worker that never runs a local model
        does not pay."""
        self._settled = await asyncio.to_thread(self._settle)
        if self.settings.preload_models and self._warmup is None:
            engine = await asyncio.to_thread(self.engine)
            engine.warming = True
            self._warmup = asyncio.create_task(self._preload(engine), name=f"warm-up-{engine.label}")

    def _settle(self) -> Settled:
        from openfal.backends.local import acceleration
        from openfal.backends.local.device import resolve_device, resolve_dtype

        device = resolve_device(self.device or self.settings.device)
        dtype = resolve_dtype(self.settings.dtype, device)  # a bad OPENFAL_DTYPE fails the start
        profile = self.acceleration or acceleration.resolve(self.settings.acceleration, device, attention=self.settings.attention_backend)
        return Settled(device, dtype, profile)

    @property
    def ready(self) -> bool:
        """False while the preloaded models load and compile (``/health/ready`` is 503)."""
        return self._warmup is None or self._warmup.done()

    async def claim_gate(self) -> None:
        """Return once no run of this backend is before or inside its engine call.

        The worker's dispatcher waits on this before claiming (with two slots per GPU,
        ``OPENFAL_CONCURRENCY={"local": 2}``): the second slot takes the next request
        while the first encodes and publishes its images, never while the GPU is busy,
        so an idle GPU elsewhere is not passed over for a request that would wait here.
        """
        condition = self._condition()
        async with condition:
            while any(token.live() for token in self._on_gpu):
                # a cancel or a time limit stops a run without a notification: look again
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(condition.wait(), GATE_POLL_SECONDS)

    def wake(self, token: str) -> bool:
        """Local runs follow no upstream: no webhook token is this backend's."""
        return False

    def _condition(self) -> asyncio.Condition:
        if self._gpu_free is None:
            self._gpu_free = asyncio.Condition()
        return self._gpu_free

    async def _engine_done(self, token: _GpuToken | None, *, all_of_it: bool = False) -> None:
        """One group of this run finished its engine call (``all_of_it``: the run ended);
        when none is left the run leaves the GPU (once)."""
        if token is None or token.left:
            return
        token.groups_left -= 1
        if token.groups_left <= 0 or all_of_it:
            token.left = True
            self._on_gpu.discard(token)
            condition = self._condition()
            async with condition:
                condition.notify_all()

    async def wait_ready(self) -> None:
        if self._warmup is not None:
            await asyncio.shield(self._warmup)

    async def _preload(self, engine: Engine) -> None:
        from openfal.backends.local.registry import SAFETY_CHECKER

        models = [m for m in self.settings.preload_models if m != SAFETY_CHECKER]
        try:
            if SAFETY_CHECKER in self.settings.preload_models:
                await asyncio.to_thread(engine.safety_checker)
            await asyncio.to_thread(engine.warm_up, models)
        except Exception:  # a missing model is reported per request; the server still serves
            log.exception("%s: preloading %s failed", engine.label, ", ".join(self.settings.preload_models))
        finally:
            engine.warming = False

    async def close(self) -> None:
        if self._warmup is not None:
            await asyncio.gather(self._warmup, return_exceptions=True)
        if self._engine is not None:
            await asyncio.to_thread(self._engine.close)
        if self._own_client is not None:
            await self._own_client.aclose()
            self._own_client = None

    def status(self) -> dict[str, Any]:
        """Device, dtype and the pipelines kept warm (no engine yet: what ``start`` settled)."""
        if self._engine is not None:
            return self._engine.status()
        if self._settled is None:
            return {"started": False}
        device, dtype, profile = self._settled
        return {
            "started": True, "device": str(device), "label": self.label or self.settings.gpu_label or str(device),
            "dtype": str(dtype).removeprefix("torch."), "acceleration": profile.profile,
            "warming": False, "models": [], "loaded": [], "loaded_bytes": 0, "runner_hints": [],
        }  # fmt: skip

    async def run(self, jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        groups = self._groups(jobs)
        token = _GpuToken(len(groups), list(jobs))
        self._on_gpu.add(token)
        _GPU_TOKEN.set(token)
        try:
            await self.wait_ready()
            results: dict[int, Output | RunError] = {}
            for group in groups:
                outcome = await self._run_group([jobs[i] for i in group])
                results.update(zip(group, outcome, strict=True))
            return [results[i] for i in range(len(jobs))]
        finally:
            await self._engine_done(token, all_of_it=True)

    # -- internals ---------------------------------------------------------------------------

    def engine(self) -> Engine:
        """The engine, built on first use (called in a worker thread: its imports take
        seconds; the lock keeps two slots' first runs from building two)."""
        with self._engine_lock:
            if self._engine is None:
                from openfal.backends.local.engine import Engine

                # settled by ``start`` (not resolved and logged again); a test may build it unstarted
                settled = self._settled
                device, acceleration = (settled.device, settled.acceleration) if settled else (self.device, self.acceleration)
                self._engine = Engine(self.settings, self.options, self._safety_checker, device=device, label=self.label, acceleration=acceleration)
            return self._engine

    async def engine_done(self) -> None:
        """The current run's group left the engine (families call it after their
        engine call, before encoding, so the next claimed run may take the GPU)."""
        await self._engine_done(_GPU_TOKEN.get())

    def http(self) -> httpx.AsyncClient:
        """The guarded client input fetches and LoRA downloads go through."""
        if self._client is not None:
            return self._client
        if self._own_client is None:
            from openfal.fetch import make_client

            self._own_client = make_client(self.settings, media=self.media)
        return self._own_client

    def _groups(self, jobs: Sequence[Job]) -> list[list[int]]:
        """Job indices that can share a call (the worker claims by batch key; this keeps
        a mixed list correct too)."""
        groups: dict[Any, list[int]] = {}
        for index, job in enumerate(jobs):
            key = self.batch_key(job.endpoint_id, job.input)
            groups.setdefault(key if key is not None else ("alone", index), []).append(index)
        return list(groups.values())

    async def _run_group(self, jobs: list[Job]) -> list[Output | RunError]:
        live = [job for job in jobs if not job.cancelled]
        outcome: dict[int, Output | RunError] = {id(job): RunCancelled() for job in jobs if job.cancelled}
        if live:
            try:
                outputs = await self._dispatch(live)
            except RunError as exc:
                outputs = [exc] * len(live)
            outcome.update({id(job): out for job, out in zip(live, outputs, strict=True)})
        return [RunCancelled() if job.cancelled else outcome[id(job)] for job in jobs]

    async def _dispatch(self, jobs: list[Job]) -> list[Output | RunError]:
        endpoint_id = jobs[0].endpoint_id
        family = family_of(endpoint_id)
        if family is None:
            raise ModelUnavailable(f"The local backend does not serve {endpoint_id} (it serves: {', '.join(sorted(SERVED))})")
        return await family.run(self, jobs)
