"""Generation parameters fal's schemas do not expose, which the server has to choose.

Defaults follow the models' own recommendations; tests and benchmarks pass smaller
values to keep CPU runs short (the code path is the same).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LocalOptions:
    #: Kontext endpoints have no ``num_inference_steps``; Kontext [dev]'s default
    kontext_steps: int = 28
    #: pixel area of Kontext outputs and reference images (Kontext was trained at ~1 MP)
    kontext_area: int = 1024 * 1024
    #: largest output of image-to-image (which has no ``image_size``: the input's size is
    #: used, scaled down to this area when larger)
    image_to_image_max_area: int = 1024 * 1024
    #: LTX-Video's output: 768x512, 121 frames at 24 fps (about 5 s), as in the LTX paper
    ltx_width: int = 768
    ltx_height: int = 512
    ltx_frames: int = 121
    ltx_fps: int = 24
    #: largest frame area of videos whose size the request picks (Wan's ``resolution``):
    #: larger sizes are scaled down to it, keeping their aspect; None: fal's sizes
    video_max_area: int | None = None
    #: at most one preview per job per this many seconds
    preview_interval_seconds: float = 1.0
    #: largest image (pixels) whose requests may share a pipeline call
    #: (``OPENFAL_BATCH_MAX_PIXELS``; the backend sets it from the settings)
    batch_max_pixels: int = 512 * 512
