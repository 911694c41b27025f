"""The FLUX endpoints: a fal input -> one diffusers pipeline call -> fal's output.

| endpoint                                    | pipeline(s)                                 | weights             |
| ------------------------------------------- | ------------------------------------------- | ------------------- |
| fal-ai/flux-1/dev, /schnell                 | FluxPipeline                                | dev / schnell       |
| fal-ai/flux-1/dev/image-to-image            | FluxImg2ImgPipeline                         | dev                 |
| fal-ai/flux-1/dev/redux, /schnell/redux     | FluxPriorReduxPipeline -> FluxPipeline      | Redux + dev/schnell |
| fal-ai/flux-pro/kontext[/max]               | FluxKontextPipeline                         | Kontext [dev]       |
| fal-ai/flux-pro/kontext[/max]/multi         | FluxKontextPipeline, stitched reference     | Kontext [dev]       |
| fal-ai/flux-pro/kontext[/max]/text-to-image | FluxKontextPipeline without a reference     | Kontext [dev]       |

Image-to-image has no ``image_size``: the output has the input's size (floored to 16,
scaled down past ``LocalOptions.image_to_image_max_area``). Kontext outputs follow
``aspect_ratio`` at ~1 MP, or, without it, the input's aspect ratio snapped to Kontext's
training resolutions; references are resized likewise and passed with
``_auto_resize=False`` and ``max_area`` = the output's area, so the pipeline keeps the
size chosen here (for the tiny set and real weights alike). ``acceleration`` is ignored.

Kontext [pro] and [max] are closed BFL models; FLUX.1 Kontext [dev] is the open
stand-in, so results differ from fal's. ``safety_tolerance`` and ``enhance_prompt``
have no local counterpart and are ignored.

Multi-image Kontext is done by stitching: the references are scaled to a common height
and pasted side by side into one canvas, which is the single reference image. This is
the usual ComfyUI workflow and needs no pipeline outside the diffusers library (the
community multi-image pipeline concatenates per-image latents instead).

Seeds: image ``k`` of a request with seed ``s`` is drawn from its own
``torch.Generator("cpu").manual_seed(s + k)``, so a request's images are the same
whether it runs alone or batched with others, and on any device.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import torch
from PIL import Image

from openfal.backends.base import Job, Output
from openfal.backends.local import sizes
from openfal.backends.local.cache import PipelineSpec
from openfal.backends.local.lora_files import LoraFile
from openfal.backends.local.options import LocalOptions
from openfal.backends.local.plans import (
    IMAGE_TO_IMAGE,
    KONTEXT,
    KONTEXT_MULTI,
    KONTEXT_TEXT,
    MAX_SEQUENCE_LENGTH,
    PIPELINE_CLASS,
    REDUX,
    REDUX_PRIOR,
    REDUX_TEXT_TOKENS,
    TEXT,
    TEXT_ENCODERS,
    FluxPlan,
)
from openfal.config import Settings
from openfal.fetch import fetch_image
from openfal.models import MediaBlob


@dataclass(frozen=True, slots=True)
class FluxItem:
    """One request's share of a pipeline call."""

    job: Job
    prompt: str
    seed: int
    num_images: int
    output_format: str
    check_safety: bool

    @classmethod
    def of(cls, job: Job) -> FluxItem:
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
        return [torch.Generator("cpu").manual_seed(self.seed + k) for k in range(self.num_images)]


@dataclass(frozen=True, slots=True)
class FluxCall:
    """A plan with its input image fetched and its output size decided."""

    plan: FluxPlan
    width: int
    height: int
    image: Image.Image | None = None
    #: the LoRAs of this call (every request of a batch asks for the same set)
    loras: tuple[LoraFile, ...] = ()


async def prepare_call(
    plan: FluxPlan, input: dict[str, Any], settings: Settings, options: LocalOptions, client: httpx.AsyncClient | None
) -> FluxCall:
    """Fetch the input image(s) and settle the output size."""
    if plan.kind in (TEXT, KONTEXT_TEXT):
        assert plan.size is not None
        return FluxCall(plan, *plan.size)
    if plan.kind == KONTEXT_MULTI:
        images = await asyncio.gather(
            *(fetch_image(url, settings, field=f"image_urls.{i}", client=client) for i, url in enumerate(input["image_urls"]))
        )
        first = images[0]
        canvas = stitch(images)
        width, height = plan.size or sizes.kontext_size(first.width, first.height, options.kontext_area)
        ref_w, ref_h = sizes.fit_area(canvas.width, canvas.height, options.kontext_area)
        return FluxCall(plan, width, height, canvas.resize((ref_w, ref_h), Image.Resampling.LANCZOS))
    image = await fetch_image(input["image_url"], settings, field="image_url", client=client)
    if plan.kind == KONTEXT:
        ref_w, ref_h = sizes.kontext_size(image.width, image.height, options.kontext_area)
        width, height = plan.size or (ref_w, ref_h)
        if plan.match_input:
            width, height = sizes.fit_area(image.width, image.height, options.image_to_image_max_area, grow=False)
        return FluxCall(plan, width, height, image.resize((ref_w, ref_h), Image.Resampling.LANCZOS))
    if plan.kind == IMAGE_TO_IMAGE:
        width, height = plan.size or sizes.fit_area(image.width, image.height, options.image_to_image_max_area, grow=False)
        return FluxCall(plan, width, height, image.resize((width, height), Image.Resampling.LANCZOS))
    assert plan.size is not None  # redux: image_size is in its schema
    return FluxCall(plan, *plan.size, image=image)


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


# -- running -------------------------------------------------------------------------------

Callback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


def pipeline_specs(plan: FluxPlan, folder: Callable[[str], Any]) -> tuple[PipelineSpec, PipelineSpec | None]:
    """(main pipeline, Redux prior or None) for a plan; ``folder`` resolves a model name."""
    without = TEXT_ENCODERS if plan.kind == REDUX else frozenset()
    main = PipelineSpec(plan.model, folder(plan.model), PIPELINE_CLASS[plan.kind], without)
    prior = PipelineSpec(REDUX_PRIOR, folder(REDUX_PRIOR), "FluxPriorReduxPipeline") if plan.kind == REDUX else None
    return main, prior


def call_pipeline(
    pipe: Any, prior: Any | None, call: FluxCall, items: Sequence[FluxItem], callback: Callback
) -> list[Image.Image]:
    """One pipeline call for all images of all ``items``, in order."""
    plan = call.plan
    generators = [g for item in items for g in item.generators()]
    kwargs: dict[str, Any] = {
        "width": call.width,
        "height": call.height,
        "num_inference_steps": plan.steps,
        "guidance_scale": plan.guidance,
        "generator": generators,
        "callback_on_step_end": callback,
        "output_type": "pil",
    }
    if plan.kind == REDUX:
        kwargs.update(_redux_embeddings(pipe, prior, call.image, len(generators)))
    else:
        kwargs["prompt"] = [item.prompt for item in items for _ in range(item.num_images)]
        kwargs["max_sequence_length"] = MAX_SEQUENCE_LENGTH.get(plan.model, 512)
    if plan.kind == IMAGE_TO_IMAGE:
        kwargs.update(image=call.image, strength=plan.strength)
    elif plan.kind.startswith(KONTEXT):
        kwargs.update(image=call.image, max_area=call.width * call.height, _auto_resize=False)
    return list(pipe(**kwargs).images)


def _redux_embeddings(base: Any, prior: Any, image: Image.Image | None, count: int) -> dict[str, torch.Tensor]:
    """The prior's text+image embeddings for ``count`` images.

    Redux conditions on the image alone: the text part is zeros. The zeros are sized
    from the base transformer (4096x512 and 768 for real FLUX, as the prior hard-codes
    when it has no text encoders), so the same call serves the tiny set.
    """
    config = base.transformer.config
    dtype = base.transformer.dtype
    device = base._execution_device
    out = prior(
        image=image,
        prompt_embeds=torch.zeros(1, REDUX_TEXT_TOKENS, config.joint_attention_dim, dtype=dtype, device=device),
        pooled_prompt_embeds=torch.zeros(1, config.pooled_projection_dim, dtype=dtype, device=device),
    )
    return {
        "prompt_embeds": out.prompt_embeds.to(dtype).expand(count, -1, -1),
        "pooled_prompt_embeds": out.pooled_prompt_embeds.to(dtype).expand(count, -1),
    }


# -- output -----------------------------------------------------------------------------------


def encode_image(image: Image.Image, output_format: str) -> MediaBlob:
    out = io.BytesIO()
    if output_format == "png":
        image.save(out, "PNG")
        content_type = "image/png"
    else:
        image.convert("RGB").save(out, "JPEG", quality=95)
        content_type = "image/jpeg"
    return MediaBlob(out.getvalue(), content_type, width=image.width, height=image.height)


def make_output(item: FluxItem, images: list[Image.Image], flags: list[bool], seconds: float, *, report_prompt: bool) -> Output:
    """fal's FLUX result: images, timings, seed, has_nsfw_concepts, prompt."""
    blobs = [encode_image(image, item.output_format) for image in images]
    payload = {
        "images": blobs,
        "timings": {"inference": round(seconds, 4)},
        "seed": item.seed,
        "has_nsfw_concepts": flags,
        "prompt": item.prompt if report_prompt else "",
    }
    return Output(payload)
