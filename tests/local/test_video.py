"""fal-ai/ltx-video: LTX-Video on the tiny set, encoded to a real MP4."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio

from openfal.backends.local import LocalBackend
from openfal.endpoints.catalog import CATALOG
from openfal.events import Progress
from tests.local.helpers import TEST_OPTIONS, output_of, run_one

LTX = "fal-ai/ltx-video"


async def test_ltx_writes_a_real_mp4(backend: LocalBackend, tmp_path: Path) -> None:
    """The result's video is an H.264 MP4 that ffmpeg decodes to the configured frame
    count and size; usage counts its seconds; the seed comes back."""
    result, recorder = await run_one(backend, LTX, {"prompt": "waves", "num_inference_steps": 2, "seed": 4})
    output = output_of(result)
    video = output.payload["video"]
    assert video.content_type == "video/mp4" and video.file_name and video.file_name.endswith(".mp4")
    data = video.read()
    assert data[4:8] == b"ftyp"
    path = tmp_path / "out.mp4"
    path.write_bytes(data)
    reader = imageio.get_reader(str(path), "ffmpeg")
    frames = [frame for frame in reader]
    reader.close()
    assert len(frames) == TEST_OPTIONS.ltx_frames
    assert frames[0].shape[:2] == (TEST_OPTIONS.ltx_height, TEST_OPTIONS.ltx_width)
    assert output.payload["seed"] == 4
    assert output.usage.video_seconds == TEST_OPTIONS.ltx_frames / TEST_OPTIONS.ltx_fps
    assert [p.step for p in recorder.of(Progress)] == [1, 2]
    file = {"url": "https://media.test/v.mp4", "content_type": video.content_type, "file_size": video.size}
    CATALOG[LTX].output_model.model_validate({"video": file, "seed": output.payload["seed"]})


async def test_ltx_seeds_reproduce(backend: LocalBackend) -> None:
    """The same seed gives the same video bytes; another seed does not."""
    body = {"prompt": "waves", "num_inference_steps": 2}
    first = output_of((await run_one(backend, LTX, {**body, "seed": 9}))[0]).payload["video"].read()
    again = output_of((await run_one(backend, LTX, {**body, "seed": 9}))[0]).payload["video"].read()
    other = output_of((await run_one(backend, LTX, {**body, "seed": 10}))[0]).payload["video"].read()
    assert first == again and first != other
