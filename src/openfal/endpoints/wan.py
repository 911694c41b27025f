"""Inputs and outputs of the Wan 2.2 endpoints, field for field as fal publishes them
(spec: fal-endpoints-2026.md, from ``@fal-ai/client``'s endpoint types; ranges from
fal's model pages: ``num_frames`` 17-161, ``frames_per_second`` 4-60).

Where fal's types give no range the diffusers pipeline's own limits apply (steps at
least 1, here at most 50 as for every other endpoint; guidance 0-20; ``shift`` 1-10, the
flow-shift range fal documents for Wan). Fields with no default in fal's types
(``enable_prompt_expansion``, the safety checkers) default to off.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from openfal.endpoints.schemas import File, InputModel, Seed

ImageUrl = Annotated[str, Field(min_length=1, description="http(s) or data: URL of the first frame")]
Prompt = Annotated[str, Field(min_length=1)]
NumFrames = Annotated[int, Field(ge=17, le=161, description="frames to generate (Wan makes 4k+1 frames: other counts are made as num_frames // 4 * 4 + 1)")]
FramesPerSecond = Annotated[int, Field(ge=4, le=60)]
Steps = Annotated[int, Field(ge=1, le=50)]
GuidanceScale = Annotated[float, Field(ge=0, le=20)]
Shift = Annotated[float, Field(ge=1, le=10)]
InterpolatedFrames = Annotated[int, Field(ge=0, le=4)]
AspectRatio = Literal["16:9", "9:16", "1:1"]
Interpolator = Literal["none", "film", "rife"]
VideoQuality = Literal["low", "medium", "high", "maximum"]
VideoWriteMode = Literal["fast", "balanced", "small"]


class _WanCommon(InputModel):
    prompt: Prompt
    negative_prompt: str = ""
    num_frames: NumFrames = 81
    seed: Seed | None = None
    guidance_scale: GuidanceScale = 3.5
    shift: Shift = 5
    enable_prompt_expansion: bool = False
    enable_safety_checker: bool = False
    enable_output_safety_checker: bool = False
    interpolator_model: Interpolator = "film"
    adjust_fps_for_interpolation: bool = True
    video_quality: VideoQuality = "high"
    video_write_mode: VideoWriteMode = "balanced"


class Wan5bTextToVideoInput(_WanCommon):
    """``fal-ai/wan/v2.2-5b/text-to-video`` (``WanV225bTextToVideoInput``)."""

    resolution: Literal["580p", "720p"] = "720p"
    aspect_ratio: AspectRatio = "16:9"
    frames_per_second: FramesPerSecond = 24
    num_inference_steps: Steps = 40
    num_interpolated_frames: InterpolatedFrames = 0


class Wan5bImageToVideoInput(_WanCommon):
    """``fal-ai/wan/v2.2-5b/image-to-video`` (``WanV225bImageToVideoInput``): the
    image is the first frame; ``auto`` takes the image's aspect ratio."""

    image_url: ImageUrl
    resolution: Literal["580p", "720p"] = "720p"
    aspect_ratio: Literal["auto", "16:9", "9:16", "1:1"] = "auto"
    frames_per_second: FramesPerSecond = 24
    num_inference_steps: Steps = 40
    num_interpolated_frames: InterpolatedFrames = 0


class WanA14bTextToVideoInput(_WanCommon):
    """``fal-ai/wan/v2.2-a14b/text-to-video`` (``WanV22A14bTextToVideoInput``):
    ``guidance_scale`` is the high-noise expert's, ``guidance_scale_2`` the low-noise one's."""

    resolution: Literal["480p", "580p", "720p"] = "720p"
    aspect_ratio: AspectRatio = "16:9"
    frames_per_second: FramesPerSecond = 16
    num_inference_steps: Steps = 27
    guidance_scale_2: GuidanceScale = 4
    num_interpolated_frames: InterpolatedFrames = 1
    acceleration: Literal["none", "regular"] = "regular"


class WanOutput(BaseModel):
    """``WanV225bTextToVideoOutput`` and its siblings: the video, the seed and the prompt."""

    video: File
    seed: int
    prompt: str = ""
