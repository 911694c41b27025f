"""Inputs and outputs of fal's Qwen-Image endpoints, field for field as fal publishes them
(spec: fal-endpoints-2026.md; defaults from fal's generated types).

Ranges fal documents for its Qwen-Image family (fal-ai/qwen-image-edit's llms.txt, the
same app): ``num_inference_steps`` 2-50, ``guidance_scale`` 0-20, ``num_images`` 1-4.
``guidance_scale`` is Qwen-Image's true classifier-free guidance (diffusers'
``true_cfg_scale``): at 1 or below the negative prompt is not run. fal-ai/qwen-image
encodes JPEG or PNG only; the 2512 and 2511 endpoints add WebP.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from openfal.endpoints.flux import MAX_LORAS, ImageUrl, KreaLoraWeight, Prompt
from openfal.endpoints.schemas import (
    Acceleration,
    Image,
    ImageSize,
    ImageSizePreset,
    InputModel,
    NumImages,
    OutputFormat,
    OutputFormatWebp,
    Seed,
)

Steps = Annotated[int, Field(ge=2, le=50)]
Guidance = Annotated[float, Field(ge=0, le=20)]
#: fal's ``LoraWeight`` (path, scale, force); fal documents no count limit for Qwen-Image,
#: openfal caps it as for FLUX (a 422 past it)
Loras = Annotated[list[KreaLoraWeight], Field(max_length=MAX_LORAS, description="LoRAs merged together for this image")]
#: Qwen-Image-Edit-2511 is trained on one to three reference images [?: fal does not say]
MAX_EDIT_IMAGES = 3


class _Common(InputModel):
    prompt: Prompt
    seed: Seed | None = None
    sync_mode: bool = False
    num_images: NumImages = 1
    enable_safety_checker: bool = True
    acceleration: Acceleration = "regular"
    num_inference_steps: Steps = 28
    output_format: OutputFormatWebp = "png"
    negative_prompt: str = ""


class QwenImageInput(_Common):
    """``fal-ai/qwen-image`` (Qwen-Image, 2025-08)."""

    image_size: ImageSize | ImageSizePreset = "landscape_4_3"
    num_inference_steps: Steps = 30
    guidance_scale: Guidance = 2.5
    negative_prompt: str = " "
    acceleration: Acceleration = "none"
    output_format: OutputFormat = "png"
    loras: Loras = []
    #: fal's turbo LoRA (Lightning): accepted; locally applied only as a LoRA the request names
    use_turbo: bool = False


class QwenImage2512Input(_Common):
    """``fal-ai/qwen-image-2512`` (Qwen-Image-2512)."""

    image_size: ImageSize | ImageSizePreset = "landscape_4_3"
    guidance_scale: Guidance = 5.0


class QwenImage2512LoraInput(QwenImage2512Input):
    """``fal-ai/qwen-image-2512/lora``."""

    guidance_scale: Guidance = 4.0
    loras: Loras = []


class QwenImageEdit2511Input(_Common):
    """``fal-ai/qwen-image-edit-2511`` (Qwen-Image-Edit-2511): edits one or several
    images; without ``image_size`` the output has the last image's size."""

    image_urls: Annotated[list[ImageUrl], Field(min_length=1, max_length=MAX_EDIT_IMAGES)]
    image_size: ImageSize | ImageSizePreset | None = None
    guidance_scale: Guidance = 4.5


class QwenImageEdit2511LoraInput(QwenImageEdit2511Input):
    """``fal-ai/qwen-image-edit-2511/lora``."""

    loras: Loras = []


class QwenImageOutput(BaseModel):
    images: list[Image]
    timings: dict[str, float]
    seed: int
    has_nsfw_concepts: list[bool]
    prompt: str
