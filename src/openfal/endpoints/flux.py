"""Inputs and outputs of the FLUX.1 endpoints, field for field as fal publishes them
(spec: fal-queue-api.md section 3; Krea [dev]: fal-endpoints-2026.md).

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


class LoraWeight(InputModel):
    """One LoRA of a request (fal's ``LoraWeight``)."""

    path: Annotated[
        str,
        Field(
            min_length=1,
            max_length=4096,
            description="URL of a LoRA .safetensors file, an uploaded file's URL, or the name of a LoRA installed on this server",
        ),
    ]
    #: fal publishes no range [?]: wide enough for what people use (negative scales too)
    scale: Annotated[float, Field(ge=-10, le=10, description="how strongly the LoRA applies; 0 is the base model")] = 1.0


#: fal sets no limit ("any number ... merged together"); each adds a pass over every
#: targeted layer, so openfal caps it (a 422 past it)
MAX_LORAS = 8
Loras = Annotated[list[LoraWeight], Field(max_length=MAX_LORAS, description="LoRAs merged together for this image")]
LoraAcceleration = Literal["none", "regular"]


class FluxLoraInput(_Common):
    prompt: Prompt
    image_size: ImageSize | ImageSizePreset = "landscape_4_3"
    num_inference_steps: Steps = 28
    guidance_scale: Annotated[float, Field(ge=0, le=35)] = 3.5
    loras: Loras = []
    acceleration: LoraAcceleration = "none"


class FluxLoraImageToImageInput(_Common):
    prompt: Prompt
    image_url: ImageUrl
    #: no default on fal: the output follows the input image
    image_size: ImageSize | ImageSizePreset | None = None
    strength: Annotated[float, Field(ge=0.01, le=1)] = 0.85
    num_inference_steps: Steps = 28
    guidance_scale: Annotated[float, Field(ge=0, le=35)] = 3.5
    loras: Loras = []
    acceleration: LoraAcceleration = "none"


class _Classic(InputModel):
    """fal's classic ``fal-ai/flux/*`` ids: their ``flux-1`` twins' fields, with
    ``acceleration`` defaulting to ``none``."""

    acceleration: Acceleration = "none"


class ClassicFluxDevInput(_Classic, FluxDevInput):
    pass


class ClassicFluxDevImageToImageInput(_Classic, FluxDevImageToImageInput):
    pass


class ClassicFluxSchnellInput(_Classic, FluxSchnellInput):
    pass


class FluxKreaInput(_Common):
    """``fal-ai/flux/krea``: FLUX.1 [dev]'s fields, ``acceleration`` defaulting to ``none``."""

    prompt: Prompt
    image_size: ImageSize | ImageSizePreset = "landscape_4_3"
    num_inference_steps: Steps = 28
    guidance_scale: Guidance = 3.5
    acceleration: Acceleration = "none"


class FluxKreaImageToImageInput(_Common):
    prompt: Prompt
    image_url: ImageUrl
    strength: Annotated[float, Field(ge=0.01, le=1)] = 0.95
    num_inference_steps: Annotated[int, Field(ge=10, le=50)] = 40
    guidance_scale: Guidance = 3.5
    acceleration: Acceleration = "none"


class KreaLoraWeight(LoraWeight):
    """fal's ``LoraWeight`` of ``fal-ai/flux-krea-lora``: ``force`` is accepted (it forces
    a re-download on fal; openfal re-reads a LoRA whenever its file changes)."""

    force: bool = False


class FluxKreaLoraInput(_Common):
    prompt: Prompt
    image_size: ImageSize | ImageSizePreset = "landscape_4_3"
    num_inference_steps: Steps = 28
    guidance_scale: Annotated[float, Field(ge=0, le=35)] = 3.5
    loras: Annotated[list[KreaLoraWeight], Field(max_length=MAX_LORAS, description="LoRAs merged together for this image")] = []
    acceleration: LoraAcceleration = "none"


#: Kontext [dev]'s output size: ``match_input`` keeps the input's (sides to multiples of
#: 16, within the server's limits), ``auto`` the trained resolution nearest its aspect
#: ratio, a ratio that ratio at ~1 MP
ResolutionMode = Literal["auto", "match_input", "1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]


class _KontextDevEdit(InputModel):
    """What fal's Kontext [dev] edit endpoints share (``BaseKontextEditInput``)."""

    prompt: Prompt
    image_url: ImageUrl
    seed: Seed | None = None
    sync_mode: bool = False
    num_images: NumImages = 1
    enable_safety_checker: bool = True
    acceleration: Acceleration = "none"
    resolution_mode: ResolutionMode = "match_input"


class KontextDevInput(_KontextDevEdit):
    num_inference_steps: Annotated[int, Field(ge=10, le=50)] = 28
    guidance_scale: Annotated[float, Field(ge=1, le=20)] = 2.5
    output_format: OutputFormat = "jpeg"
    #: accepted and ignored (fal dropped it in 2026 [?])
    enhance_prompt: bool = False


class KontextLoraInput(_KontextDevEdit):
    num_inference_steps: Annotated[int, Field(ge=10, le=50)] = 30
    guidance_scale: Annotated[float, Field(ge=0, le=20)] = 2.5
    output_format: OutputFormat = "png"
    loras: Loras = []


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
