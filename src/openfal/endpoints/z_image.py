"""Inputs and outputs of fal's Z-Image Turbo endpoints, field for field as fal publishes
them (spec: fal-endpoints-2026.md; ranges from fal's Z-Image Turbo docs: 1-8 steps,
1-4 images, up to three LoRAs).

Z-Image Turbo is distilled to run without classifier-free guidance: fal exposes no
``guidance_scale`` and no ``negative_prompt``, and the pipeline is called with a
guidance of 0, as Tongyi-MAI's reference code does.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from openfal.endpoints.flux import ImageUrl, LoraWeight, Prompt
from openfal.endpoints.schemas import Acceleration, Image, ImageSize, ImageSizePreset, InputModel, NumImages, OutputFormatWebp, Seed

Steps = Annotated[int, Field(ge=1, le=8)]
#: fal's ``LoRAInput`` (path, scale); fal applies at most three
Loras = Annotated[list[LoraWeight], Field(max_length=3, description="LoRAs merged together for this image (up to 3)")]


class ZImageTurboInput(InputModel):
    """``fal-ai/z-image/turbo``."""

    prompt: Prompt
    image_size: ImageSize | ImageSizePreset = "landscape_4_3"
    num_inference_steps: Steps = 8
    seed: Seed | None = None
    sync_mode: bool = False
    num_images: NumImages = 1
    enable_safety_checker: bool = True
    output_format: OutputFormatWebp = "png"
    acceleration: Acceleration = "regular"
    #: fal rewrites short prompts with an LLM (+$0.0025); accepted, not applied locally
    enable_prompt_expansion: bool = False


class ZImageTurboLoraInput(ZImageTurboInput):
    """``fal-ai/z-image/turbo/lora``."""

    loras: Loras = []


class ZImageTurboImageToImageInput(ZImageTurboInput):
    """``fal-ai/z-image/turbo/image-to-image``: ``auto`` keeps the input image's size."""

    image_url: ImageUrl
    image_size: ImageSize | ImageSizePreset | Literal["auto"] = "auto"  # type: ignore[assignment]
    #: how much of the input is repainted: 0.6 runs the last 60 % of the steps
    strength: Annotated[float, Field(ge=0.01, le=1)] = 0.6


class ZImageTurboOutput(BaseModel):
    images: list[Image]
    timings: dict[str, float]
    seed: int
    has_nsfw_concepts: list[bool]
    prompt: str
