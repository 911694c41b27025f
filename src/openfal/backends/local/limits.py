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

A video counts its frames: each frame is held to the per-image cap, and the whole
video to a cap on frames x pixels (``OPENFAL_MAX_VIDEO_PIXELS``): 1280x720 at 81 frames
on a GPU (fal's default Wan 2.2 request, and the shape memory plans count the VAE
decode for), 768x512 at 121 frames on a CPU (LTX-Video's shape, the largest the demo makes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from openfal.config import Settings
from openfal.errors import InputInvalid

GPU_IMAGE_PIXELS = 2048 * 2048
CPU_IMAGE_PIXELS = 1024 * 1024
IMAGES_PER_CALL = 4
GPU_VIDEO_PIXELS = 1280 * 720 * 81
CPU_VIDEO_PIXELS = 768 * 512 * 121
_GPU_DRIVER_FILES = ("/dev/nvidiactl", "/dev/kfd")


@dataclass(frozen=True, slots=True)
class PixelCap:
    per_image: int
    per_call: int
    #: frames x pixels of one video
    per_video: int = GPU_VIDEO_PIXELS

    @classmethod
    def from_settings(cls, settings: Settings) -> PixelCap:
        gpu = _gpu_expected(settings.device)
        per_image = settings.max_output_pixels or (GPU_IMAGE_PIXELS if gpu else CPU_IMAGE_PIXELS)
        per_call = settings.max_call_pixels or per_image * IMAGES_PER_CALL
        per_video = settings.max_video_pixels or (GPU_VIDEO_PIXELS if gpu else CPU_VIDEO_PIXELS)
        return cls(per_image, per_call, per_video)

    def check(self, width: int, height: int, num_images: int) -> None:
        """InputInvalid (fal's 422 detail) when the size or the whole call is over the cap."""
        pixels = width * height
        if pixels > self.per_image:
            raise _too_large(
                "image_size", f"{width}x{height} is {pixels} pixels; this server makes at most {self.per_image} pixels per image "
                "(OPENFAL_MAX_OUTPUT_PIXELS)", self.per_image,
            )  # fmt: skip
        if pixels * num_images > self.per_call:
            raise _too_large(
                "num_images", f"{num_images} images of {width}x{height} are {pixels * num_images} pixels; this server makes at most "
                f"{self.per_call} pixels per request (OPENFAL_MAX_CALL_PIXELS)", self.per_call,
            )  # fmt: skip

    def check_video(self, width: int, height: int, frames: int, *, size_field: str = "resolution") -> None:
        """InputInvalid when one frame is over the per-image cap or the video over the
        frames x pixels cap (``size_field`` names the field that set the frame size)."""
        pixels = width * height
        if pixels > self.per_image:
            raise _too_large(
                size_field, f"{width}x{height} is {pixels} pixels a frame; this server makes at most {self.per_image} pixels "
                "per frame (OPENFAL_MAX_OUTPUT_PIXELS)", self.per_image,
            )  # fmt: skip
        if pixels * frames > self.per_video:
            raise _too_large(
                "num_frames", f"{frames} frames of {width}x{height} are {pixels * frames} pixels; this server makes at most "
                f"{self.per_video} pixels per video (OPENFAL_MAX_VIDEO_PIXELS)", self.per_video,
            )  # fmt: skip


def _too_large(field: str, message: str, limit: int) -> InputInvalid:
    """fal's 422 detail for an output past one of the caps."""
    return InputInvalid([{"loc": ["body", field], "msg": message, "type": "output_too_large", "ctx": {"limit": limit}}])


def _gpu_expected(device: str) -> bool:
    if device.startswith("cuda"):
        return True
    if device == "auto":
        return any(os.path.exists(path) for path in _GPU_DRIVER_FILES)
    return False
