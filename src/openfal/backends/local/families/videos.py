"""What every video family shares: one request per call, its frames encoded to MP4 off
the engine's lock, and fal's ``video`` result (a File plus the seed).

The MP4 is written by diffusers' ``export_to_video`` through imageio-ffmpeg, whose wheel
carries its own ffmpeg, so this works offline.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openfal.backends.base import Job, Output
from openfal.backends.local.families.contract import Family
from openfal.events import Log
from openfal.models import MediaBlob, Usage

if TYPE_CHECKING:
    from openfal.backends.local.cache import PipelineSpec
    from openfal.backends.local.families.images import Callback
    from openfal.backends.local.options import LocalOptions


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


@dataclass(frozen=True, slots=True)
class VideoShape:
    """What the server chose for a video: size, length and rate."""

    width: int
    height: int
    frames: int
    fps: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


class VideoFamily(Family):
    """A family whose endpoints return fal's ``video`` result."""

    def shape(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions) -> VideoShape:
        raise NotImplementedError

    def pipeline_spec(self, endpoint_id: str, folder: Any) -> PipelineSpec:
        raise NotImplementedError

    def call_pipeline(self, pipe: Any, item: VideoItem, shape: VideoShape, callback: Callback) -> list[Any]:
        """The frames (PIL images) of one video."""
        raise NotImplementedError

    def plan(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions) -> VideoShape:
        return self.shape(endpoint_id, input, options)

    async def run(self, backend: Any, jobs: list[Job]) -> list[Output | Any]:
        return [await run_video(self, backend, job) for job in jobs]


async def run_video(family: VideoFamily, backend: Any, job: Job) -> Output:
    engine = await asyncio.to_thread(backend.engine)
    item = VideoItem.of(job)
    shape = family.shape(job.endpoint_id, job.input, backend.options)
    job.emit(Log(f"{family.endpoint(job.endpoint_id).title}: {shape.width}x{shape.height}, {shape.frames} frames at {shape.fps} fps, {item.steps} steps, seed {item.seed}"))
    try:
        frames, _ = await asyncio.to_thread(engine.generate_video, family, item, shape)
    finally:
        await backend.engine_done()
    data = await asyncio.to_thread(encode_mp4, frames, shape.fps)
    return make_output(item, data, shape)


def encode_mp4(frames: Sequence[Any], fps: int) -> bytes:
    """H.264 MP4 bytes (via a temporary file, which is removed)."""
    from diffusers.utils import export_to_video

    handle, name = tempfile.mkstemp(suffix=".mp4", prefix="openfal-")
    os.close(handle)
    path = Path(name)
    try:
        export_to_video(list(frames), str(path), fps=fps)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def make_output(item: VideoItem, data: bytes, shape: VideoShape) -> Output:
    video = MediaBlob(data, "video/mp4", file_name=f"{uuid.uuid4().hex[:12]}.mp4", width=None, height=None)
    return Output({"video": video, "seed": item.seed}, Usage(video_seconds=round(shape.seconds, 3)))
