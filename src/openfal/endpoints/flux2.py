"""Inputs and outputs of the FLUX.2 endpoints ([dev] and [klein] 4B/9B), field for field
as fal publishes them (spec: fal-endpoints-2026.md; ranges from fal's model pages).

Ranges: ``image_size`` 512-2048 px per side, ``num_inference_steps`` 4-50 ([klein] 9B:
4-8, as fal's ``fal-ai/flux-2/klein/9b`` page says), ``guidance_scale`` 0-20,
``num_images`` 1-4, up to 4 ``image_urls`` on the edit endpoints, up to 3 LoRAs.
[klein] is step-distilled without guidance: its endpoints have no ``guidance_scale``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from openfal.endpoints.flux import ImageUrl, LoraWeight, Prompt
from openfal.endpoints.schemas import Acceleration, Image, ImageSizePreset, InputModel, NumImages, OutputFormatWebp, Seed

#: fal: "The width and height must be between 512 and 2048 pixels"
MIN_SIDE, MAX_SIDE = 512, 2048
#: fal's FLUX.2 LoRA endpoints take up to three LoRAs
MAX_LORAS = 3
#: up to four reference images per edit
MAX_REFERENCES = 4


class Flux2ImageSize(BaseModel):
    """A custom size within FLUX.2's 512-2048 px per side (sides are floored to 16)."""

    model_config = ConfigDict(extra="forbid")

    width: Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE)] = 512
    height: Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE)] = 512


Size = Flux2ImageSize | ImageSizePreset
Steps = Annotated[int, Field(ge=4, le=50)]
KleinSteps9B = Annotated[int, Field(ge=4, le=8)]
Guidance = Annotated[float, Field(ge=0, le=20)]
ImageUrls = Annotated[list[ImageUrl], Field(min_length=1, max_length=MAX_REFERENCES, description="reference images, in order")]
Loras = Annotated[list[LoraWeight], Field(max_length=MAX_LORAS, description="LoRAs merged together for this image")]


class _Common(InputModel):
    prompt: Prompt
    seed: Seed | None = None
    sync_mode: bool = False
    num_images: NumImages = 1
    enable_safety_checker: bool = True
    output_format: OutputFormatWebp = "png"


class _Text(InputModel):
    image_size: Size = "landscape_4_3"


class _Edit(InputModel):
    image_urls: ImageUrls
    #: absent: the output has the first reference image's size
    image_size: Size | None = None


class _Dev(_Common):
    """FLUX.2 [dev]'s fields: guidance-distilled, 28 steps, guidance 2.5."""

    num_inference_steps: Steps = 28
    guidance_scale: Guidance = 2.5
    acceleration: Acceleration = "regular"
    #: fal rewrites the prompt with an LLM when set; openfal has no prompt model and says so
    enable_prompt_expansion: bool = False


class _Klein4b(_Common):
    num_inference_steps: Steps = 4


class _Klein9b(_Common):
    num_inference_steps: KleinSteps9B = 4


class Flux2Input(_Dev, _Text):
    pass


class Flux2EditInput(_Dev, _Edit):
    pass


class Flux2LoraInput(Flux2Input):
    loras: Loras = []


class Flux2LoraEditInput(Flux2EditInput):
    loras: Loras = []


class Flux2Klein4bInput(_Klein4b, _Text):
    pass


class Flux2Klein4bEditInput(_Klein4b, _Edit):
    pass


class Flux2Klein4bLoraInput(Flux2Klein4bInput):
    loras: Loras = []


class Flux2Klein9bInput(_Klein9b, _Text):
    pass


class Flux2Klein9bEditInput(_Klein9b, _Edit):
    pass


class Flux2Output(BaseModel):
    """fal's ``Flux2Output`` (every FLUX.2 endpoint answers this shape): ``ImageFile``s."""

    images: list[Image]
    timings: dict[str, float]
    seed: int
    has_nsfw_concepts: list[bool]
    prompt: str
