"""What every image family shares: a request's share of a call, the plan of a call,
fal's image result, and the async side of a run (fetching, LoRAs, limits, encoding).

A family says how its endpoints read their input (``plan``), fetch and size their
references (``prepare``) and call their pipeline (``call_pipeline``); the run around it
is the same for all: batch items, resolve LoRAs, check the pixel cap once the size is
known, run on the engine's thread, encode off the event loop.

Seeds: image ``k`` of a request with seed ``s`` is drawn from its own
``torch.Generator("cpu").manual_seed(s + k)``, so a request's images are the same
whether it runs alone or batched with others, and on any device.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from openfal.backends.base import Job, Output
from openfal.backends.local.families.contract import Family, SubmitChecks
from openfal.errors import InputInvalid, InputRejected
from openfal.events import Log
from openfal.models import MediaBlob

if TYPE_CHECKING:
    import httpx
    import torch

    from openfal.backends.local.cache import PipelineSpec
    from openfal.backends.local.lora_files import LoraFile
    from openfal.backends.local.options import LocalOptions
    from openfal.config import Settings

#: a step callback as diffusers calls it: (pipe, step, timestep, tensors) -> tensors
Callback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ImagePlan:
    """The parameters one pipeline call shares, read from an input without fetching."""

    endpoint_id: str
    kind: str
    #: the models the call needs, in the order they run (the last one denoises)
    models: tuple[str, ...]
    steps: int
    guidance: float
    strength: float | None
    #: known up front (image_size / aspect_ratio); None: decided from the input image
    size: tuple[int, int] | None
    #: (path, scale) of each LoRA asked for: requests batch only with the same set
    loras: tuple[tuple[str, float], ...] = ()
    #: Kontext [dev]'s ``match_input``: the output keeps the input image's size
    match_input: bool = False
    #: whether requests of this plan may share a call (no per-request input image)
    batchable: bool = False
    #: family-specific settings that are part of the call (negative prompt, shift, ...)
    extra: tuple[tuple[str, Any], ...] = ()
    #: fal's ``acceleration`` tier (none/regular/high; tiers.py), set from the input for
    #: every family by ``ImageFamily.request_plan``; "" where the endpoint has none
    acceleration: str = ""
    #: largest image (pixels) that batches (``LocalOptions.batch_max_pixels``)
    batch_max_pixels: int | None = None

    @property
    def model(self) -> str:
        return self.models[-1]

    def batch_key(self) -> str | None:
        if not self.batchable or self.size is None:
            return None
        if self.batch_max_pixels is not None and self.size[0] * self.size[1] > self.batch_max_pixels:
            return None  # compute-bound already at one image: a batch would only add latency
        tier = [self.acceleration] if self.acceleration else []
        return json.dumps([self.endpoint_id, *self.size, self.steps, self.guidance, *([list(self.loras)] if self.loras else []), *self.extra, *tier])


@dataclass(frozen=True, slots=True)
class ImageItem:
    """One request's share of a pipeline call."""

    job: Job
    prompt: str
    seed: int
    num_images: int
    output_format: str
    check_safety: bool

    @classmethod
    def of(cls, job: Job) -> ImageItem:
        input = job.input
        seed = input.get("seed")
        return cls(
            job=job,
            prompt=str(input.get("prompt") or ""),
            seed=int(seed) if seed is not None else secrets.randbelow(2**32),
            num_images=int(input.get("num_images") or 1),
            output_format=str(input.get("output_format") or "jpeg"),
            check_safety=bool(input.get("enable_safety_checker", True)),
        )

    def generators(self) -> list[torch.Generator]:
        import torch

        return [torch.Generator("cpu").manual_seed(self.seed + k) for k in range(self.num_images)]


@dataclass(frozen=True, slots=True)
class ImageCall:
    """A plan with its input images fetched and its output size decided."""

    plan: ImagePlan
    width: int
    height: int
    #: the reference image (Kontext, image-to-image, Redux) or None
    image: Image.Image | None = None
    #: the LoRAs of this call (every request of a batch asks for the same set)
    loras: tuple[LoraFile, ...] = ()
    #: several reference images (FLUX.2 edit), in order
    images: tuple[Image.Image, ...] = ()

    @classmethod
    def text(cls, plan: ImagePlan) -> ImageCall:
        """Text to image: the plan's size, no input image (every family's first case)."""
        assert plan.size is not None
        return cls(plan, *plan.size)


class ImageFamily(Family):
    """A family whose endpoints return fal's ``images`` result."""

    #: run kinds whose warmed shapes run compiled (warm-up calls text-to-image only)
    warmed_kinds: frozenset[str] = frozenset()

    def plan(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions) -> ImagePlan:
        raise NotImplementedError

    async def prepare(
        self, plan: ImagePlan, input: dict[str, Any], settings: Settings, options: LocalOptions, client: httpx.AsyncClient | None
    ) -> ImageCall:
        """Fetch the input image(s) and settle the output size."""
        raise NotImplementedError

    def pipeline_specs(self, plan: ImagePlan, folder: Callable[[str], Any]) -> list[PipelineSpec]:
        """The pipelines a call needs, in the order ``call_pipeline`` takes them."""
        raise NotImplementedError

    def call_pipeline(self, pipes: Sequence[Any], call: ImageCall, items: Sequence[ImageItem], callback: Callback) -> list[Image.Image]:
        """One pipeline call for all images of all ``items``, in order."""
        raise NotImplementedError

    def preview(self, latents: Any, width: int, height: int, row: int) -> bytes | None:
        """A small JPEG of the latents mid-run, or None when the family has no cheap one."""
        return None

    def report_prompt(self, plan: ImagePlan) -> bool:
        """Whether the result echoes the prompt (Redux has none)."""
        return True

    def describe(self, plan: ImagePlan, width: int, height: int, seed: int, count: int) -> str:
        images = f"{count} images" if count > 1 else "1 image"
        return f"{plan.endpoint_id} on {plan.model}: {images} of {width}x{height}, {plan.steps} steps, seed {seed}"

    def notes(self, plan: ImagePlan, input: dict[str, Any]) -> list[str]:
        """Log lines for fields the local pipeline cannot honour (never silently different)."""
        return []

    # -- the contract's hooks, the same for every image family ---------------------------------

    def request_plan(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions) -> ImagePlan:
        """``plan`` with what every family shares read from the input: fal's
        ``acceleration`` tier, and the batching pixel cap."""
        plan = self.plan(endpoint_id, input, options)
        tier = input.get("acceleration")
        return dataclasses.replace(
            plan, acceleration=tier if tier in ("none", "regular", "high") else plan.acceleration, batch_max_pixels=options.batch_max_pixels
        )

    def batch_key(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions) -> str | None:
        return self.request_plan(endpoint_id, input, options).batch_key()

    def admit(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions, check: SubmitChecks) -> None:
        plan = self.plan(endpoint_id, input, options)
        if plan.size is not None:
            check.pixels(*plan.size, int(input.get("num_images") or 1))
        check.loras([path for path, _ in plan.loras])

    async def run(self, backend: Any, jobs: list[Job]) -> list[Output | Any]:
        return await run_images(self, backend, jobs)


def lora_refs(input: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    """(path, scale) of each LoRA of fal's ``loras`` field, for ``ImagePlan.loras``."""
    return tuple((str(item["path"]), float(item.get("scale", 1.0))) for item in input.get("loras") or [])


def stitch(images: Sequence[Image.Image]) -> Image.Image:
    """The images scaled to the first one's height and pasted left to right."""
    height = images[0].height
    scaled = [im.resize((max(1, round(im.width * height / im.height)), height), Image.Resampling.LANCZOS) for im in images]
    canvas = Image.new("RGB", (sum(im.width for im in scaled), height), (255, 255, 255))
    x = 0
    for im in scaled:
        canvas.paste(im, (x, 0))
        x += im.width
    return canvas


# -- the run -------------------------------------------------------------------------------


async def run_images(family: ImageFamily, backend: Any, jobs: list[Job]) -> list[Output | Any]:
    """One call's worth of requests (same batch key) through ``backend``'s engine."""
    from openfal.backends.local import tiers

    engine = await asyncio.to_thread(backend.engine)
    plan = family.request_plan(jobs[0].endpoint_id, jobs[0].input, backend.options)
    tier = tiers.capped(plan.endpoint_id, plan.acceleration, backend.settings.acceleration_caps)
    if tier != plan.acceleration:
        for job in jobs:
            job.emit(Log(f"acceleration {plan.acceleration} is capped at {tier} on this server for {plan.endpoint_id}"))
        plan = dataclasses.replace(plan, acceleration=tier)
    for model in plan.models:  # fail before fetching anything when a model is missing
        await asyncio.to_thread(engine.folder, model)
    call = await family.prepare(plan, jobs[0].input, backend.settings, backend.options, backend.http())
    loras = await backend.lora_files.resolve(list(plan.loras), backend.http())
    call = dataclasses.replace(call, loras=tuple(loras))
    try:  # a size decided by the input image is known only now
        backend.pixel_cap.check(call.width, call.height, sum(int(job.input.get("num_images") or 1) for job in jobs))
    except InputInvalid as exc:
        raise InputRejected(exc.detail) from None
    items = [ImageItem.of(job) for job in jobs]
    for item in items:
        for note in family.notes(plan, item.job.input):
            item.job.emit(Log(note, "WARN"))
        item.job.emit(Log(family.describe(plan, call.width, call.height, item.seed, item.num_images)))
    try:
        batch = await asyncio.to_thread(engine.generate_images, call, items)
    finally:  # the encoding below overlaps the next claimed run's GPU work
        await backend.engine_done()
    report_prompt = family.report_prompt(plan)

    def encode() -> list[Output]:  # JPEG/PNG encoding, off the event loop
        return [
            make_output(item, images, flags, batch.seconds, report_prompt=report_prompt, timings=batch.timings)
            for item, images, flags in zip(items, batch.images, batch.flags, strict=True)
        ]

    return list(await asyncio.to_thread(encode))


# -- output -----------------------------------------------------------------------------------


#: zlib level of PNG results: 1 is several times faster than PIL's default 6 (100-300 ms
#: per megapixel of request latency) for files about 10-20 % larger
PNG_LEVEL = 1


def encode_image(image: Image.Image, output_format: str) -> MediaBlob:
    out = io.BytesIO()
    if output_format == "png":
        image.save(out, "PNG", compress_level=PNG_LEVEL)
        content_type = "image/png"
    elif output_format == "webp":
        image.convert("RGB").save(out, "WEBP", quality=95)
        content_type = "image/webp"
    else:
        image.convert("RGB").save(out, "JPEG", quality=95)
        content_type = "image/jpeg"
    return MediaBlob(out.getvalue(), content_type, width=image.width, height=image.height)


def make_output(
    item: ImageItem, images: list[Image.Image], flags: list[bool], seconds: float, *, report_prompt: bool, timings: dict[str, float] | None = None
) -> Output:
    """fal's image result: images, timings (with the ``acceleration`` tier's entries,
    tiers.py), seed, has_nsfw_concepts, prompt."""
    blobs = [encode_image(image, item.output_format) for image in images]
    payload = {
        "images": blobs,
        "timings": {"inference": round(seconds, 4), **(timings or {})},
        "seed": item.seed,
        "has_nsfw_concepts": flags,
        "prompt": item.prompt if report_prompt else "",
    }
    return Output(payload)
