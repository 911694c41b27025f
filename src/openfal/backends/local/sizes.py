"""Output and reference-image sizes.

FLUX works on 2x2 patches of 1/8-scale latents, so every side is a multiple of 16.
diffusers floors silently; openfal floors first and reports the size it produced.
"""

from __future__ import annotations

import math
from typing import Any

from openfal.endpoints.schemas import ImageSize, resolve_image_size

#: (width, height) Kontext [dev] was trained at: diffusers' ``PREFERRED_KONTEXT_RESOLUTIONS``,
#: copied so that batch keys can be computed without importing diffusers (a test
#: checks the copy against diffusers)
PREFERRED_KONTEXT_RESOLUTIONS = [
    (672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184), (944, 1104),
    (1024, 1024),
    (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752), (1456, 720), (1504, 688), (1568, 672),
]  # fmt: skip
MULTIPLE = 16
#: the area Kontext [dev] was trained around (its preferred resolutions are ~1 MP)
KONTEXT_AREA = 1024 * 1024


def floor16(value: float) -> int:
    return max(MULTIPLE, int(value) // MULTIPLE * MULTIPLE)


def round16(value: float) -> int:
    return max(MULTIPLE, round(value / MULTIPLE) * MULTIPLE)


def image_size(value: Any) -> tuple[int, int]:
    """(width, height) for fal's ``image_size`` (a preset name or ``{width, height}``),
    each side floored to a multiple of 16."""
    size = ImageSize(**value) if isinstance(value, dict) else value
    width, height = resolve_image_size(size)
    return floor16(width), floor16(height)


def aspect_size(aspect_ratio: str, area: int) -> tuple[int, int]:
    """(width, height) of ``"W:H"`` covering about ``area`` pixels, sides rounded to 16."""
    w, h = (int(part) for part in aspect_ratio.split(":"))
    ratio = w / h
    return round16(math.sqrt(area * ratio)), round16(math.sqrt(area / ratio))


def kontext_size(width: int, height: int, area: int) -> tuple[int, int]:
    """Kontext's size for an image of ``width`` x ``height``: the preferred training
    resolution nearest its aspect ratio (what diffusers' ``_auto_resize`` picks),
    scaled from Kontext's ~1 MP to ``area``."""
    ratio = width / height
    _, w, h = min((abs(ratio - pw / ph), pw, ph) for pw, ph in PREFERRED_KONTEXT_RESOLUTIONS)
    scale = math.sqrt(area / KONTEXT_AREA)
    return floor16(w * scale), floor16(h * scale)


def fit_area(width: int, height: int, area: int, *, grow: bool = True) -> tuple[int, int]:
    """``width`` x ``height`` scaled to about ``area`` pixels (only down unless ``grow``),
    sides floored to 16."""
    scale = (area / (width * height)) ** 0.5
    if not grow:
        scale = min(scale, 1.0)
    return floor16(width * scale), floor16(height * scale)
