"""What every video family shares: a video is a long job, and is run as one.

* Its shape (size, frames, rate) is known at submit, so the pixel caps count frames: each
  frame within ``OPENFAL_MAX_OUTPUT_PIXELS``, the video within ``OPENFAL_MAX_VIDEO_PIXELS``
  (frames x pixels), a 422 before anything is queued (``admit``), checked again once an
  input image has decided the size.
* Progress is reported per denoising step and per decoded chunk (``VideoReporter``), and
  cancelling, or the run-time limit, stops it at the next step, chunk or encoded frame.
* The MP4 is encoded after the engine call, so the GPU lock is free meanwhile, frame by
  frame into ffmpeg (imageio-ffmpeg's wheel carries its own ffmpeg, so this works
  offline) and into a file under the data folder; the result's ``MediaBlob`` names that
  file and the media store streams it (a local copy or an S3 multipart upload), so the
  video is never held whole in memory. fal's ``video`` result: a File plus the seed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openfal.backends.base import Job, Output
from openfal.backends.local.families.contract import Family
from openfal.errors import InputInvalid, InputRejected, RunCancelled
from openfal.events import Log
from openfal.models import MediaBlob, Usage

if TYPE_CHECKING:
    from openfal.backends.local.cache import PipelineSpec
    from openfal.backends.local.options import LocalOptions
    from openfal.backends.local.progress import VideoReporter


@dataclass(frozen=True, slots=True)
class VideoItem:
    job: Job
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    seed: int
    #: the first frame (image-to-video), already at the video's size
    image: Any = None

    @classmethod
    def of(cls, job: Job, image: Any = None) -> VideoItem:
        input = job.input
        seed = input.get("seed")
        return cls(
            job=job,
            prompt=str(input["prompt"]),
            negative_prompt=str(input.get("negative_prompt") or ""),
            steps=int(input["num_inference_steps"]),
            guidance=float(input["guidance_scale"]),
            seed=int(seed) if seed is not None else secrets.randbelow(2**32),
            image=image,
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


@dataclass(frozen=True, slots=True)
class Encoding:
    """H.264 settings: ``crf`` (lower is better, 0-51) and the x264 ``preset`` (slower
    is smaller at the same quality). The default is imageio's (quality 5: CRF 25)."""

    crf: int = 25
    preset: str = "medium"
    #: extra ffmpeg output options
    options: tuple[str, ...] = field(default=("-movflags", "+faststart"))


class VideoFamily(Family):
    """A family whose endpoints return fal's ``video`` result."""

    #: whether the result echoes the prompt (fal's Wan outputs do, LTX's does not)
    report_prompt: bool = False

    def shape(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions, image_size: tuple[int, int] | None = None) -> VideoShape:
        """The video a request makes; ``image_size`` is its input image's (width, height),
        which sizes a video whose aspect ratio follows the image (None at submit: the
        family's nominal size for it)."""
        raise NotImplementedError

    def pipeline_spec(self, endpoint_id: str, folder: Any) -> PipelineSpec:
        raise NotImplementedError

    def call_pipeline(self, pipe: Any, item: VideoItem, shape: VideoShape, reporter: VideoReporter) -> Sequence[Any]:
        """The frames of one video: PIL images, or uint8 arrays of (height, width, 3)."""
        raise NotImplementedError

    def decode_chunks(self, shape: VideoShape) -> int:
        """How many decoded chunks ``call_pipeline`` reports (0: the pipeline decodes)."""
        return 0

    async def prepare(self, backend: Any, job: Job) -> tuple[VideoItem, VideoShape]:
        """Fetch the inputs and settle the shape (text-to-video: nothing to fetch)."""
        return VideoItem.of(job), self.shape(job.endpoint_id, job.input, backend.options)

    def notes(self, endpoint_id: str, input: dict[str, Any]) -> list[str]:
        """Log lines for fields the local pipeline does not apply (never silently different)."""
        return []

    def encoding(self, input: dict[str, Any]) -> Encoding:
        return Encoding()

    def billed_seconds(self, shape: VideoShape) -> float:
        """The video seconds a request is priced by (default: its length)."""
        return shape.seconds

    # -- the contract's hooks, the same for every video family -----------------------------------

    def plan(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions) -> VideoShape:
        return self.shape(endpoint_id, input, options)

    def admit(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions, check: Any) -> None:
        shape = self.shape(endpoint_id, input, options)
        check.video(shape.width, shape.height, shape.frames)

    async def run(self, backend: Any, jobs: list[Job]) -> list[Output | Any]:
        return [await run_video(self, backend, job) for job in jobs]


async def run_video(family: VideoFamily, backend: Any, job: Job) -> Output:
    """One video request: inputs, the engine call (GPU lock held), then the MP4 encoded
    and written to a file with the lock released (the next claimed run may take the GPU)."""
    engine = await asyncio.to_thread(backend.engine)
    endpoint = family.endpoint(job.endpoint_id)
    for model in endpoint.models:  # fail before fetching anything when a model is missing
        await asyncio.to_thread(engine.folder, model)
    item, shape = await family.prepare(backend, job)
    try:  # a size decided by the input image is known only now
        backend.pixel_cap.check_video(shape.width, shape.height, shape.frames)
    except InputInvalid as exc:
        raise InputRejected(exc.detail) from None
    for note in family.notes(job.endpoint_id, job.input):
        job.emit(Log(note, "WARN"))
    job.emit(Log(f"{endpoint.title}: {shape.width}x{shape.height}, {shape.frames} frames at {shape.fps} fps, {item.steps} steps, seed {item.seed}"))
    try:
        frames, _ = await asyncio.to_thread(engine.generate_video, family, item, shape)
    finally:
        await backend.engine_done()
    folder = Path(backend.settings.data_dir).resolve() / "tmp" / "video"
    path = await asyncio.to_thread(encode_mp4, frames, shape.fps, folder, family.encoding(job.input), lambda: job.cancelled)
    del frames
    job.emit(Log(f"encoded {shape.frames} frames to H.264 MP4 ({path.stat().st_size} bytes)"))
    return make_output(item, path, shape, prompt=item.prompt if family.report_prompt else None, billed_seconds=family.billed_seconds(shape))


def encode_mp4(frames: Sequence[Any], fps: int, folder: Path, encoding: Encoding = Encoding(), cancelled: Callable[[], bool] = lambda: False) -> Path:
    """An H.264 MP4 of ``frames`` in a new file under ``folder``, written one frame at a
    time through ffmpeg's stdin; ``RunCancelled`` (and no file) once ``cancelled()``."""
    import imageio_ffmpeg
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=".mp4", prefix="video-", dir=folder)
    os.close(handle)
    path = Path(name)
    height, width = np.asarray(frames[0]).shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", quality=None, pix_fmt_out="yuv420p", ffmpeg_log_level="error",
        output_params=["-crf", str(encoding.crf), "-preset", encoding.preset, *encoding.options],
    )  # fmt: skip
    try:
        writer.send(None)
        for frame in frames:
            if cancelled():
                raise RunCancelled()
            writer.send(np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)))
        writer.close()
    except BaseException:
        writer.close()
        path.unlink(missing_ok=True)
        raise
    return path


def make_output(item: VideoItem, video: bytes | Path, shape: VideoShape, *, prompt: str | None = None, billed_seconds: float | None = None) -> Output:
    """fal's video result: the File (a temporary file the worker publishes and removes),
    the seed, and the prompt where the endpoint's output has one."""
    blob = MediaBlob(video, "video/mp4", file_name=f"{uuid.uuid4().hex[:12]}.mp4", width=None, height=None)
    payload: dict[str, Any] = {"video": blob, "seed": item.seed}
    if prompt is not None:
        payload["prompt"] = prompt
    seconds = shape.seconds if billed_seconds is None else billed_seconds
    return Output(payload, Usage(video_seconds=round(seconds, 3)))
