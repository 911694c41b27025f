"""Inputs and outputs of the eleven FLUX endpoints, field for field as fal publishes them
(spec: fal-queue-api.md section 3).

``acceleration`` defaults to ``regular`` as in fal's 2025-12 generated types (the
sibling docs say ``none``; the field has no effect on local runs either way).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from openfal.endpoints.schemas import (
    Acceleration,
    Guidance,
    Image,
    ImageSize,
    ImageSizePreset,
    InputModel,
    NumImages,
    OutputFormat,
    RegistryImage,
    Seed,
    Steps,
)

ImageUrl = Annotated[str, Field(min_length=1, description="http(s) or data: URL of an image")]
Prompt = Annotated[str, Field(min_length=1)]


class _Common(InputModel):
    seed: Seed | None = None
    sync_mode: bool = False
    num_images: NumImages = 1
    enable_safety_checker: bool = True
    output_format: OutputFormat = "jpeg"
    acceleration: Acceleration = "regular"


class FluxDevInput(_Common):
    prompt: Prompt
    image_size: ImageSize | ImageSizePreset = "landscape_4_3"
    num_inference_steps: Steps = 28
    guidance_scale: Guidance = 3.5


class FluxDevImageToImageInput(_Common):
    prompt: Prompt
    image_url: ImageUrl
    strength: Annotated[float, Field(ge=0.01, le=1)] = 0.95
    num_inference_steps: Annotated[int, Field(ge=10, le=50)] = 40
    guidance_scale: Guidance = 3.5


class FluxDevReduxInput(_Common):
    image_url: ImageUrl
    image_size: ImageSize | ImageSizePreset = "landscape_4_3"
    num_inference_steps: Steps = 28
    guidance_scale: Guidance = 3.5


class FluxSchnellInput(_Common):
    prompt: Prompt
    image_size: ImageSize | ImageSizePreset = "landscape_4_3"
    num_inference_steps: Annotated[int, Field(ge=1, le=12)] = 4
    guidance_scale: Guidance = 3.5


class FluxSchnellReduxInput(_Common):
    image_url: ImageUrl
    image_size: ImageSize | ImageSizePreset = "landscape_4_3"
    num_inference_steps: Annotated[int, Field(ge=1, le=12)] = 4


AspectRatio = Literal["21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21"]
SafetyTolerance = Literal["1", "2", "3", "4", "5", "6"]


class _KontextCommon(InputModel):
    prompt: Prompt
    seed: Seed | None = None
    guidance_scale: Guidance = 3.5
    sync_mode: bool = False
    num_images: NumImages = 1
    output_format: OutputFormat = "jpeg"
    safety_tolerance: SafetyTolerance = "2"
    enhance_prompt: bool = False


class KontextInput(_KontextCommon):
    image_url: ImageUrl
    aspect_ratio: AspectRatio | None = None


class KontextMultiInput(_KontextCommon):
    image_urls: Annotated[list[ImageUrl], Field(min_length=1, max_length=4)]
    aspect_ratio: AspectRatio | None = None


class KontextTextToImageInput(_KontextCommon):
    aspect_ratio: AspectRatio = "1:1"


class _Output(BaseModel):
    timings: dict[str, float]
    seed: int
    has_nsfw_concepts: list[bool]
    prompt: str


class FluxOutput(_Output):
    images: list[Image]


class KontextRegistryOutput(_Output):
    images: list[RegistryImage]
