"""The thread side of the local backend: one device, one lock, the model cache.

Everything here blocks and runs in a worker thread (``asyncio.to_thread``). One lock
serialises model loading, pipeline calls and safety checks on the device. That is
stricter than one lock per pipeline, on purpose: pipelines share modules and
tokenizers (whose truncation settings are per-call state), two concurrent calls on one
GPU only split its throughput while doubling activation memory, and eviction must
never drop a pipeline another thread is running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from openfal.backends.base import Job
from openfal.backends.local import registry
from openfal.backends.local.cache import ModelCache, PipelineSpec
from openfal.backends.local.device import resolve_device, resolve_dtype
from openfal.backends.local.flux import FluxCall, FluxItem, call_pipeline, pipeline_specs
from openfal.backends.local.options import LocalOptions
from openfal.backends.local.previews import flux_preview
from openfal.backends.local.progress import StepReporter
from openfal.backends.local.safety import NoSafetyChecker, SafetyChecker, blacken, load_safety_checker
from openfal.backends.local.video import LTX_MODEL, LTX_PIPELINE, VideoItem, generate_video
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
    """Per item: its images and their NSFW flags; and the seconds the pipeline took."""

    images: list[list[Image.Image]]
    flags: list[list[bool]]
    seconds: float


class Engine:
    def __init__(self, settings: Settings, options: LocalOptions, safety_checker: SafetyChecker | None = None) -> None:
        _quiet_libraries()
        self.settings = settings
        self.options = options
        device = resolve_device(settings.device)
        self.cache = ModelCache(
            device=device, dtype=resolve_dtype(settings.dtype, device), budget_bytes=settings.model_memory_budget_bytes
        )
        self.lock = threading.Lock()
        self._safety = safety_checker

    def folder(self, name: str) -> Path:
        """The model's folder, or ``ModelUnavailable`` (demo mode: builds the tiny one)."""
        return registry.model_folder(name, self.settings)

    # -- images ----------------------------------------------------------------------------

    def generate_images(self, call: FluxCall, items: Sequence[FluxItem]) -> ImageBatch:
        main, prior = pipeline_specs(call.plan, self.folder)
        jobs = [item.job for item in items]
        rows = _first_rows([item.num_images for item in items])
        preview = None
        if self.settings.previews:
            preview = lambda latents, row: flux_preview(latents, call.width, call.height, index=row)  # noqa: E731
        reporter = StepReporter(jobs, first_index=rows, preview=preview, preview_interval=self.options.preview_interval_seconds)
        with self.lock:
            reporter.check_cancelled()
            specs = [spec for spec in (prior, main) if spec is not None]
            self._announce_loads(jobs, specs)
            pipes = self.cache.get(*specs)
            pipe, prior_pipe = pipes[-1], (pipes[0] if prior is not None else None)
            started = time.perf_counter()
            images = call_pipeline(pipe, prior_pipe, call, items, reporter)
            seconds = time.perf_counter() - started
            per_item = [images[row : row + item.num_images] for row, item in zip(rows, items, strict=True)]
            flags = [self._check(item, imgs) for item, imgs in zip(items, per_item, strict=True)]
        return ImageBatch([blacken(imgs, f) for imgs, f in zip(per_item, flags, strict=True)], flags, seconds)

    def _check(self, item: FluxItem, images: list[Image.Image]) -> list[bool]:
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
            self._safety = load_safety_checker(folder, self.cache.device) if folder else NoSafetyChecker()
        return self._safety

    # -- video -------------------------------------------------------------------------------

    def generate_video(self, item: VideoItem) -> tuple[list[Any], float]:
        spec = PipelineSpec(LTX_MODEL, self.folder(LTX_MODEL), LTX_PIPELINE)
        reporter = StepReporter([item.job], first_index=[0])
        with self.lock:
            reporter.check_cancelled()
            self._announce_loads([item.job], [spec])
            (pipe,) = self.cache.get(spec)
            started = time.perf_counter()
            frames = generate_video(pipe, item, self.options, reporter)
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
            "dtype": str(cache.dtype).removeprefix("torch."),
            "loaded": loaded,
            "loaded_bytes": loaded_bytes,
            "budget_bytes": cache.budget_bytes,
        }

    def close(self) -> None:
        with self.lock:
            self.cache.clear()


def _quiet_libraries() -> None:
    """No tqdm bars from diffusers/transformers loading and sampling in a server's log."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _first_rows(counts: Sequence[int]) -> list[int]:
    rows, row = [], 0
    for count in counts:
        rows.append(row)
        row += count
    return rows
