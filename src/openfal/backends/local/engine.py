"""The thread side of the local backend: one device, one lock, the model cache.

One ``Engine`` drives one device (``--gpus`` runs one worker process per GPU, each with
one engine; gpu_workers.py). After loading, a pipeline of an accelerated family gets the
engine's acceleration profile (acceleration.py) and is warmed (warmup.py): its blocks
are compiled with a dynamic token dimension, so every size, text length and reference
image runs compiled and no request compiles. Calls hold at most ``max_batch_images``
images, so the VAE decode of one call never decodes more. Out of device memory
anywhere on the device path ends the request 503 and frees what it held (oom.py).

Everything here blocks and runs in a worker thread (``asyncio.to_thread``). One lock
serialises model loading and pipeline calls on the device: pipelines share modules and
tokenizers (whose truncation settings are per-call state), two concurrent calls on one
GPU only split its throughput while doubling activation memory, and eviction must never
drop a pipeline another thread is running. The safety check runs after the lock is
released (under a lock of its own), so the next request's denoising starts meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from openfal.backends.base import Job
from openfal.backends.local import acceleration as accel
from openfal.backends.local import families, lora_bank, memory_plan, placement, registry, tiers, warmup
from openfal.backends.local.cache import ModelCache, PipelineSpec
from openfal.backends.local.device import resolve_device, resolve_dtype
from openfal.backends.local.families.images import ImageCall, ImageFamily, ImageItem
from openfal.backends.local.families.videos import VideoFamily, VideoItem, VideoShape
from openfal.backends.local.lora_adapters import Adapters
from openfal.backends.local.oom import guard
from openfal.backends.local.options import LocalOptions
from openfal.backends.local.progress import StepReporter, VideoReporter
from openfal.backends.local.prompt_cache import PromptCache
from openfal.backends.local.safety import NoSafetyChecker, SafetyChecker, blacken, load_safety_checker
from openfal.config import Settings
from openfal.events import Log

log = logging.getLogger("openfal.local")

NO_CHECKER_LOG = (
    "No safety checker is installed on this server: has_nsfw_concepts is false for every "
    "image without any check (set OPENFAL_SAFETY_CHECKER_PATH or run "
    "`openfal models download safety-checker`)"
)


@dataclass(frozen=True, slots=True)
class ImageBatch:
    """Per item: its images and their NSFW flags; the seconds the pipeline took; and the
    ``timings`` entries of fal's ``acceleration`` tier it ran at (tiers.py)."""

    images: list[list[Image.Image]]
    flags: list[list[bool]]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


class Engine:
    """``device`` overrides ``settings.device`` (one engine per GPU); ``acceleration``
    overrides the profile resolved from ``settings.acceleration`` (tests)."""

    def __init__(
        self,
        settings: Settings,
        options: LocalOptions,
        safety_checker: SafetyChecker | None = None,
        *,
        device: torch.device | str | None = None,
        acceleration: accel.Acceleration | None = None,
        label: str | None = None,
        memory_bytes: int | None = None,
    ) -> None:
        _quiet_libraries()
        self.settings = settings
        self.options = options
        device = torch.device(device) if device is not None else resolve_device(settings.device)
        self.label = label or settings.gpu_label or str(device)
        self.acceleration = acceleration or accel.resolve(settings.acceleration, device, attention=settings.attention_backend)
        log.info("%s: acceleration %s (%s)", self.label, self.acceleration.profile, self.acceleration.reason)
        if self.acceleration.compiles:
            warmup.use_compile_cache(settings.effective_compile_cache_dir)
        self.cache = ModelCache(
            device=device,
            dtype=resolve_dtype(settings.dtype, device),
            budget_bytes=settings.model_memory_budget_bytes or default_budget(device),
            place=self._place,
            estimate=self._estimate,
        )
        #: GPU memory to plan placements for; None: the device's free memory at load
        #: (on CPU: no plan, everything resident). Tests pass a figure to force a plan.
        self.memory_bytes = memory_bytes
        self.plans: dict[str, memory_plan.ModelPlan] = {}
        self.lock = threading.Lock()
        self.adapters = Adapters(max_rank=settings.lora_max_rank, idle_seconds=settings.lora_idle_seconds)
        self._safety = safety_checker
        self._safety_lock = threading.Lock()
        #: prompt embeddings of recent calls (a re-rolled seed skips the text encoders)
        self.prompts = PromptCache()
        #: the calls compiled at warm-up (each graph variant once: batch 1 and 2+, LoRA
        #: slots off and on); any size runs on them
        self.warmed: set[warmup.Shape] = set()
        self._warmed_models: set[str] = set()
        #: set while warm-up runs (``/health/ready`` answers 503 until it is clear)
        self.warming = False

    def folder(self, name: str) -> Path:
        """The model's folder, or ``ModelUnavailable`` (demo mode: builds the tiny one)."""
        return registry.model_folder(name, self.settings)

    # -- images ----------------------------------------------------------------------------

    def generate_images(self, call: ImageCall, items: Sequence[ImageItem]) -> ImageBatch:
        """All images of ``items``, in calls of at most ``max_batch_images`` images."""
        images: list[list[Image.Image]] = []
        flags: list[list[bool]] = []
        seconds = 0.0
        timings: dict[str, float] = {}
        for chunk in image_chunks(items, self.settings.max_batch_images):
            batch = self._generate_chunk(call, chunk)
            images += batch.images
            flags += batch.flags
            seconds = max(seconds, batch.seconds)
            timings = {**timings, **batch.timings}
        return ImageBatch(images, flags, seconds, timings)

    def _generate_chunk(self, call: ImageCall, items: Sequence[ImageItem]) -> ImageBatch:
        family = _image_family(call.plan.endpoint_id)
        specs = family.pipeline_specs(call.plan, self.folder)
        main = specs[-1]
        jobs = [item.job for item in items]
        rows = _first_rows([item.num_images for item in items])
        preview = None
        if self.settings.previews:
            preview = lambda latents, row: family.preview(latents, call.width, call.height, row)  # noqa: E731
        reporter = StepReporter(jobs, first_index=rows, preview=preview, preview_interval=self.options.preview_interval_seconds)
        device = self.cache.device

        def say(message: str) -> None:
            for job in jobs:
                job.emit(Log(message))

        with self.lock:
            reporter.check_cancelled()
            self._announce_loads(jobs, specs)
            pipes = self.cache.get(*specs)
            pipe = pipes[-1]
            self.prompts.install(pipe)
            guard(device, f"copying LoRAs into {main.model}", lambda: self.adapters.apply(pipe, call.loras, say=say))
            guard(device, f"warming up {main.model}", lambda: self._warm_model(main.model, pipe, jobs))
            started = time.perf_counter()

            def run() -> tuple[list[Image.Image], tiers.TierRun]:
                threshold = self.settings.acceleration_high_threshold
                with tiers.applied(pipe, call.plan.acceleration, threshold=threshold, profile=self.acceleration.profile, say=say) as tier:
                    images = family.call_pipeline(pipes, call, items, reporter)
                return images, tier

            images, tier = guard(device, f"{main.model} at {call.width}x{call.height}", run)
            seconds = time.perf_counter() - started
            pipes, pipe = [], None  # drop them before the safety check (rebound, not del: the closures above hold them)
        per_item = [images[row : row + item.num_images] for row, item in zip(rows, items, strict=True)]
        with self._safety_lock:  # the device lock is free: the next request denoises meanwhile
            flags = guard(device, "the safety check", lambda: [self._check(item, imgs) for item, imgs in zip(items, per_item, strict=True)])
        return ImageBatch([blacken(imgs, f) for imgs, f in zip(per_item, flags, strict=True)], flags, seconds, tier.timings(seconds))

    # -- acceleration and warm-up ------------------------------------------------------------

    def _place(self, spec: PipelineSpec, pipe: Any) -> None:
        """Put a freshly loaded pipeline where its memory plan says, accelerated."""
        plan = self._plan(spec)
        if plan is not None:
            self.plans[spec.model] = plan
            if not plan.fits:
                log.warning("%s: %s needs %.1f GiB even with %s offload; trying anyway", self.label, spec.model, plan.resident_gib, plan.offload)
        family, model = families.BY_MODEL.get(spec.model, (None, None))
        slots = self.settings.lora_slots if model is not None and model.loras else 0
        accelerated = family is not None and family.accelerated
        steps = placement.place(
            pipe, self.cache.device, plan, self.acceleration, accelerated=accelerated, lora_slots=slots, lora_rank=self.settings.lora_max_rank,
            lora_targets=family.lora_targets if family is not None else (), blocks=family.compile_blocks if family is not None else (),
        )  # fmt: skip
        for step in steps:
            log.info("%s: %s: %s", self.label, spec.model, step)

    def _plan(self, spec: PipelineSpec, budget: int | None = None, reusing: frozenset[str] | None = None) -> memory_plan.ModelPlan | None:
        """The placement of ``spec`` within the engine's one budget (the model cache's):
        what the loaded models already hold on the device is taken off it, and the
        components this pipeline reuses from them are not counted again."""
        if spec.model not in families.BY_MODEL:
            return None
        device = self.cache.device
        if budget is None:
            if self.memory_bytes is not None:
                budget = self.memory_bytes
            elif device.type == "cuda":
                budget = min(self.cache.budget_bytes - self.cache.loaded_bytes(), torch.cuda.mem_get_info(device)[0])
            else:
                return None
        reusing = self.cache.reusing if reusing is None else reusing
        fp8 = self.acceleration.profile == "fp8" or accel.fp8_unsupported(device) is None
        return memory_plan.plan_model(
            spec.model,
            budget,
            max_images=self.settings.max_batch_images,
            sizes=self.settings.warmup_sizes,
            fp8_supported=fp8,
            prefer_fp8=self.acceleration.profile == "fp8",
            safety_checker=self._safety is None or self._safety.active,
            without=spec.without | reusing,
            lora_slots=self.settings.lora_slots if registry.MODELS[spec.model].loras and self.acceleration.compiles else 0,
            lora_rank=self.settings.lora_max_rank,
        )

    def _estimate(self, spec: PipelineSpec, reusing: frozenset[str]) -> int | None:
        """Device bytes ``spec`` will take at its best placement within the whole budget
        (the cache evicts until they fit): weights at the dtypes the plan stores them in,
        activations and reserve. None off CUDA (no plan: file sizes are used)."""
        if self.cache.device.type != "cuda" and self.memory_bytes is None:
            return None
        plan = self._plan(spec, budget=self.cache.budget_bytes, reusing=reusing)
        return None if plan is None else int(plan.resident_gib * memory_plan.GIB)

    def warm_up(self, models: Sequence[str]) -> None:
        """Load ``models`` and compile their warm-up shapes (``OPENFAL_PRELOAD_MODELS``)."""
        self.warming = True
        try:
            for model in models:
                with self.lock:
                    spec = self._warmup_spec(model)
                    (pipe,) = self.cache.get(spec)
                    self._warm_model(model, pipe, [])
        finally:
            self.warming = False

    def _warmup_spec(self, model: str) -> PipelineSpec:
        if model == registry.SAFETY_CHECKER:
            raise ValueError("use safety_checker() to preload the checker")
        return PipelineSpec(model, self.folder(model), families.model(model).pipeline)

    def adopt(self, spec: PipelineSpec, pipe: Any, shapes: Sequence[warmup.Shape] | None = None) -> None:
        """Serve a pipeline built in memory as ``spec`` and warm it for ``shapes``
        (default: the configured warm-up shapes). The GPU benchmark uses this."""
        with self.lock:
            self.cache.adopt(spec, pipe)
            self._warm_model(spec.model, pipe, [], shapes)

    def _warm_model(self, model: str, pipe: Any, jobs: Sequence[Job], shapes: Sequence[warmup.Shape] | None = None) -> None:
        """Compile every graph variant requests of ``model`` run, once (a no-op when not
        compiled): batch 1 and batch 2+ (dynamo specialises size 1), each with the LoRA
        slots off and on. The token dimension is dynamic, so one size serves all; the
        largest configured size is used (``shapes`` overrides: the benchmark)."""
        if not self.acceleration.compiles or model in self._warmed_models or getattr(pipe, "transformer", None) is None:
            return
        if getattr(pipe.transformer, accel.MARK, None) is None:
            return  # not an accelerated family: nothing was compiled
        family = families.family_of_model(model)
        if shapes is None:
            shapes = warmup.warmup_shapes(model, self.settings.warmup_sizes, self.settings.max_batch_images)
        variants = [False, True] if lora_bank.bank_of(pipe.transformer) is not None else [None]
        for job in jobs:
            job.emit(Log(f"compiling {model} ({len(shapes) * len(variants)} warm-up calls, once per server start)"))
        started = time.perf_counter()
        was_active = lora_bank.is_active(pipe.transformer)
        try:
            for shape in shapes:
                for active in variants:
                    if active is not None:
                        lora_bank.set_active(pipe.transformer, active)
                    family.warm_up(pipe, shape.width, shape.height, shape.images, model)
                self.warmed.add(shape)
        finally:
            if variants != [None]:
                lora_bank.set_active(pipe.transformer, was_active)
        self._warmed_models.add(model)
        log.info("%s: %s warmed (%d calls) in %.1f s", self.label, model, len(shapes) * len(variants), time.perf_counter() - started)

    def _check(self, item: ImageItem, images: list[Image.Image]) -> list[bool]:
        if not item.check_safety or item.job.cancelled:
            return [False] * len(images)
        checker = self.safety_checker()
        if not checker.active:
            item.job.emit(Log(NO_CHECKER_LOG, "WARN"))
            return [False] * len(images)
        flags = checker(images)
        for index, flag in enumerate(flags):
            if flag:
                item.job.emit(Log(f"image {index} was flagged by the safety checker and replaced by a black image", "WARN"))
        return flags

    def safety_checker(self) -> SafetyChecker:
        """The configured checker, loaded once (a missing configured one is an error;
        none configured is the no-op checker)."""
        if self._safety is None:
            explicit = bool(self.settings.safety_checker_path) or registry.SAFETY_CHECKER in self.settings.model_paths
            folder = registry.find_model(registry.SAFETY_CHECKER, self.settings)
            if folder is None and explicit:
                self.folder(registry.SAFETY_CHECKER)  # raises ModelUnavailable with the reason
            with memory_plan.CONSTRUCTION_LOCK:  # another engine may be building a model now
                self._safety = load_safety_checker(folder, self.cache.device) if folder else NoSafetyChecker()
        return self._safety

    # -- video -------------------------------------------------------------------------------

    def generate_video(self, family: VideoFamily, item: VideoItem, shape: VideoShape) -> tuple[Sequence[Any], float]:
        """The frames of one video (the family reports steps and decoded chunks); the
        caller encodes them after this returns, with the lock released."""
        spec = family.pipeline_spec(item.job.endpoint_id, self.folder)
        reporter = VideoReporter(item.job, decode_chunks=family.decode_chunks(shape))
        with self.lock:
            reporter.check_cancelled()
            self._announce_loads([item.job], [spec])
            (pipe,) = self.cache.get(spec)
            started = time.perf_counter()
            frames = guard(
                self.cache.device, f"{spec.model} at {shape.width}x{shape.height}, {shape.frames} frames", lambda: family.call_pipeline(pipe, item, shape, reporter)
            )
            return frames, time.perf_counter() - started

    # -- housekeeping ------------------------------------------------------------------------

    def _announce_loads(self, jobs: Sequence[Job], specs: Sequence[PipelineSpec]) -> None:
        for spec in specs:
            if not self.cache.is_loaded(spec):
                for job in jobs:
                    job.emit(Log(f"loading model {spec.model} from {spec.folder}"))

    def status(self) -> dict[str, Any]:
        cache = self.cache
        for _ in range(3):  # the cache changes in the generation thread; retry a torn read
            try:
                loaded = [{"model": s.model, "pipeline": s.class_name} for s in cache.loaded()]
                loaded_bytes = cache.loaded_bytes()
                break
            except RuntimeError:
                continue
        else:
            loaded, loaded_bytes = [], 0
        return {
            "started": True,
            "device": str(cache.device),
            "label": self.label,
            **_device_memory(cache.device),
            "acceleration": self.acceleration.profile,
            "warming": self.warming,
            "warmed_shapes": len(self.warmed),
            "models": sorted({s.model for s in cache.loaded()}),
            "plans": {model: {"offload": p.offload, "transformer_dtype": p.transformer_dtype, "resident_gib": p.resident_gib} for model, p in self.plans.items()},
            "dtype": str(cache.dtype).removeprefix("torch."),
            "loaded": loaded,
            "loaded_bytes": loaded_bytes,
            # X-Fal-Runner-Hint strings this engine is the better place for
            "runner_hints": sorted({entry["model"] for entry in loaded} | set(self.adapters.hints())),
            "budget_bytes": cache.budget_bytes,
        }

    def close(self) -> None:
        with self.lock:
            self.prompts.clear()
            self.cache.clear()


def _quiet_libraries() -> None:
    """No tqdm bars from diffusers/transformers loading and sampling in a server's log."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _image_family(endpoint_id: str) -> ImageFamily:
    family = families.family_of(endpoint_id)
    assert isinstance(family, ImageFamily), endpoint_id
    return family


def image_chunks(items: Sequence[ImageItem], cap: int) -> list[list[ImageItem]]:
    """``items`` in order, grouped so no group holds more than ``cap`` images (a request
    asking for more than ``cap`` runs alone)."""
    chunks: list[list[ImageItem]] = []
    count = 0
    for item in items:
        if chunks and count + item.num_images <= cap:
            chunks[-1].append(item)
            count += item.num_images
        else:
            chunks.append([item])
            count = item.num_images
    return chunks


def default_budget(device: torch.device) -> int:
    """The engine's one memory budget when none is configured: the GPU's memory less the
    CUDA context and allocator slack (memory plans place weights and count activations
    within it, and the cache evicts by the same figure); on CPU half the host's memory."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return max(0, total - RESERVE_BYTES)
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)


#: memory outside the budget: the CUDA context, cuBLAS workspaces, lazily loaded kernel
#: modules and the allocator's fragmentation (memory plans add their own 1 GiB reserve
#: and count activations)
RESERVE_BYTES = 1 * 1024**3


def _device_memory(device: torch.device) -> dict[str, int]:
    if device.type != "cuda":
        return {}
    free, total = torch.cuda.mem_get_info(device)
    return {"memory_free_bytes": free, "memory_total_bytes": total, "memory_peak_bytes": torch.cuda.max_memory_allocated(device)}


def _first_rows(counts: Sequence[int]) -> list[int]:
    rows, row = [], 0
    for count in counts:
        rows.append(row)
        row += count
    return rows

