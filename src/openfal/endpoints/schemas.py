"""Types shared by the endpoint schemas, with fal's names and limits."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

ImageSizePreset = Literal[
    "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"
]

IMAGE_SIZE_PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}


class InputModel(BaseModel):
    """Base of every endpoint input: unknown fields are ignored, as fal's apps do."""

    model_config = ConfigDict(extra="ignore")


class ImageSize(BaseModel):
    """A custom size; FLUX works in multiples of 16, so the server rounds down and
    reports the size it really produced."""

    model_config = ConfigDict(extra="forbid")

    width: Annotated[int, Field(gt=0, le=14142)] = 512
    height: Annotated[int, Field(gt=0, le=14142)] = 512


def resolve_image_size(size: ImageSize | str) -> tuple[int, int]:
    """(width, height) in pixels for a preset name or a custom size."""
    if isinstance(size, str):
        return IMAGE_SIZE_PRESETS[size]
    return size.width, size.height


class File(BaseModel):
    """fal's File: a URL plus what is known about it."""

    url: str
    content_type: str | None = None
    file_name: str | None = None
    file_size: int | None = None


class Image(File):
    """fal's toolkit Image (``fal__toolkit__image__image__Image``)."""

    width: int | None = None
    height: int | None = None


class RegistryImage(BaseModel):
    """``registry__image__fast_sdxl__models__Image``: width and height required."""

    url: str
    width: int
    height: int
    content_type: str = "image/jpeg"


Steps = Annotated[int, Field(ge=1, le=50)]
Guidance = Annotated[float, Field(ge=1, le=20)]
NumImages = Annotated[int, Field(ge=1, le=4)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
OutputFormat = Literal["jpeg", "png"]
#: the newer endpoints (FLUX.2, Qwen-Image 2512/2511, Z-Image) also encode WebP
OutputFormatWebp = Literal["jpeg", "png", "webp"]
Acceleration = Literal["none", "regular", "high"]
