"""``fal-ai/ltx-video``: LTX-Video text-to-video with ``LTXPipeline``, encoded to MP4.

fal's schema has no size or length; ``LocalOptions`` holds them (768x512, 121 frames at
24 fps by default: about 5 s, the LTX paper's setting). The MP4 is written by diffusers'
``export_to_video`` through imageio-ffmpeg, whose wheel carries its own ffmpeg, so
this works offline. No previews: a video latent has no cheap RGB projection here.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import export_to_video

from openfal.backends.base import Job, Output
from openfal.backends.local.options import LocalOptions
from openfal.models import MediaBlob, Usage

LTX_MODEL = "ltx-video"
LTX_PIPELINE = "LTXPipeline"

Callback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class VideoItem:
    job: Job
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    seed: int

    @classmethod
    def of(cls, job: Job) -> VideoItem:
        input = job.input
        seed = input.get("seed")
        return cls(
            job=job,
            prompt=str(input["prompt"]),
            negative_prompt=str(input.get("negative_prompt") or ""),
            steps=int(input["num_inference_steps"]),
            guidance=float(input["guidance_scale"]),
            seed=int(seed) if seed is not None else secrets.randbelow(2**32),
        )


def generate_video(pipe: Any, item: VideoItem, options: LocalOptions, callback: Callback) -> list[Any]:
    """The frames (PIL images) of one video."""
    out = pipe(
        prompt=item.prompt,
        negative_prompt=item.negative_prompt or None,
        width=options.ltx_width,
        height=options.ltx_height,
        num_frames=options.ltx_frames,
        frame_rate=options.ltx_fps,
        num_inference_steps=item.steps,
        guidance_scale=item.guidance,
        generator=torch.Generator("cpu").manual_seed(item.seed),
        callback_on_step_end=callback,
        output_type="pil",
    )
    return list(out.frames[0])


def encode_mp4(frames: list[Any], fps: int) -> bytes:
    """H.264 MP4 bytes (via a temporary file, which is removed)."""
    handle, name = tempfile.mkstemp(suffix=".mp4", prefix="openfal-")
    os.close(handle)
    path = Path(name)
    try:
        export_to_video(frames, str(path), fps=fps)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def make_output(item: VideoItem, data: bytes, options: LocalOptions) -> Output:
    video = MediaBlob(
        data,
        "video/mp4",
        file_name=f"{uuid.uuid4().hex[:12]}.mp4",
        width=None,
        height=None,
    )
    seconds = options.ltx_frames / options.ltx_fps
    return Output({"video": video, "seed": item.seed}, Usage(video_seconds=round(seconds, 3)))
