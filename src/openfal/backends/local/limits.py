"""The operator's cap on output pixels: what one image and one call may ask of the device.

fal's schemas allow ``image_size`` up to 14142x14142 (200 MP); attention cost grows with
the square of the pixel count, so such a request holds a GPU (or a CPU) for hours in
one step, where cancel and the run time limit cannot reach it. Requests whose size is
known from their input are refused at submit with a 422 naming the cap; sizes decided
from an input image are checked again once that image is read.

Defaults follow the device the workers run on (``OPENFAL_DEVICE``; with ``auto``, a GPU
is assumed where an NVIDIA or AMD driver is present, checked without importing torch
so an API node stays light): 2048x2048 per image on a GPU (the most FLUX is trained
for), 1024x1024 on a CPU (fal's largest preset); a call may take four such images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from openfal.config import Settings
from openfal.errors import InputInvalid

GPU_IMAGE_PIXELS = 2048 * 2048
CPU_IMAGE_PIXELS = 1024 * 1024
IMAGES_PER_CALL = 4
_GPU_DRIVER_FILES = ("/dev/nvidiactl", "/dev/kfd")


@dataclass(frozen=True, slots=True)
class PixelCap:
    per_image: int
    per_call: int

    @classmethod
    def from_settings(cls, settings: Settings) -> PixelCap:
        per_image = settings.max_output_pixels or (GPU_IMAGE_PIXELS if _gpu_expected(settings.device) else CPU_IMAGE_PIXELS)
        per_call = settings.max_call_pixels or per_image * IMAGES_PER_CALL
        return cls(per_image, per_call)

    def check(self, width: int, height: int, num_images: int) -> None:
        """InputInvalid (fal's 422 detail) when the size or the whole call is over the cap."""
        pixels = width * height
        if pixels > self.per_image:
            raise InputInvalid(
                [
                    {
                        "loc": ["body", "image_size"],
                        "msg": f"{width}x{height} is {pixels} pixels; this server makes at most {self.per_image} pixels per image "
                        "(OPENFAL_MAX_OUTPUT_PIXELS)",
                        "type": "output_too_large",
                        "ctx": {"limit": self.per_image},
                    }
                ]
            )
        if pixels * num_images > self.per_call:
            raise InputInvalid(
                [
                    {
                        "loc": ["body", "num_images"],
                        "msg": f"{num_images} images of {width}x{height} are {pixels * num_images} pixels; this server makes at most "
                        f"{self.per_call} pixels per request (OPENFAL_MAX_CALL_PIXELS)",
                        "type": "output_too_large",
                        "ctx": {"limit": self.per_call},
                    }
                ]
            )


def _gpu_expected(device: str) -> bool:
    if device.startswith("cuda"):
        return True
    if device == "auto":
        return any(os.path.exists(path) for path in _GPU_DRIVER_FILES)
    return False
