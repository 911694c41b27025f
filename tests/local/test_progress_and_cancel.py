"""Per-step progress, logs and previews, and cancellation between steps with no VAE
decode."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from openfal.backends.local import LocalBackend
from openfal.errors import RunCancelled
from openfal.events import Log, Preview, Progress
from tests.local.helpers import TEST_OPTIONS, data_uri, make_job, output_of, run_one

DEV = "fal-ai/flux-1/dev"


def t2i(steps: int) -> dict[str, Any]:
    return {"prompt": "x", "image_size": {"width": 64, "height": 48}, "num_inference_steps": steps, "seed": 1}


async def test_progress_is_reported_for_every_step(backend: LocalBackend) -> None:
    """A 5-step run emits Progress 1/5 ... 5/5 and a 'step i/5' log line per step."""
    _, recorder = await run_one(backend, DEV, t2i(5))
    assert [(p.step, p.total) for p in recorder.of(Progress)] == [(i, 5) for i in range(1, 6)]
    steps = [log.message for log in recorder.of(Log) if log.message.startswith("step ")]
    assert steps == [f"step {i}/5" for i in range(1, 6)]


async def test_image_to_image_progress_counts_the_effective_steps(backend: LocalBackend) -> None:
    """10 steps at strength 0.6 run int(10*0.6) = 6 steps, and progress says so."""
    body = {"prompt": "x", "image_url": data_uri(64, 64), "num_inference_steps": 10, "strength": 0.6}
    _, recorder = await run_one(backend, "fal-ai/flux-1/dev/image-to-image", body)
    assert [(p.step, p.total) for p in recorder.of(Progress)] == [(i, 6) for i in range(1, 7)]


async def test_previews_are_jpegs_of_the_image_aspect(backend: LocalBackend) -> None:
    """With previews on, intermediate steps emit JPEG previews (not after the last)."""
    _, recorder = await run_one(backend, DEV, t2i(4))
    previews = recorder.of(Preview)
    assert 1 <= len(previews) <= 3
    image = Image.open(io.BytesIO(previews[0].data))
    assert image.format == "JPEG" and image.size == (64, 48)


async def test_previews_can_be_turned_off(make_settings: Any) -> None:
    """settings.previews=False emits none."""
    local = LocalBackend(make_settings(previews=False), options=TEST_OPTIONS)
    _, recorder = await run_one(local, DEV, t2i(3))
    await local.close()
    assert recorder.of(Preview) == [] and len(recorder.of(Progress)) == 3


async def test_cancel_mid_run_stops_at_the_next_step_without_decoding(backend: LocalBackend) -> None:
    """Cancelling at step 2 of 8 ends the run at step 2 with RunCancelled, and the VAE
    decoder never runs (observed with a forward hook on the real decoder)."""
    # load the pipeline the run will use, to watch its VAE decoder
    warm, _ = await run_one(backend, DEV, t2i(1))
    output_of(warm)
    engine = backend.engine()
    (spec,) = [s for s in engine.cache.loaded() if s.class_name == "FluxPipeline" and s.model == "flux-dev"]
    (pipe,) = engine.cache.get(spec)
    decodes: list[int] = []
    hook = pipe.vae.decoder.register_forward_hook(lambda *args: decodes.append(1))
    try:
        job, recorder = make_job(DEV, t2i(8))
        recorder.on_event = lambda event: job.cancel() if isinstance(event, Progress) and event.step == 2 else None
        (result,) = await backend.run([job])
    finally:
        hook.remove()
    assert isinstance(result, RunCancelled)
    assert [p.step for p in recorder.of(Progress)] == [1, 2]
    assert decodes == []


async def test_a_job_cancelled_before_it_starts_never_runs(backend: LocalBackend) -> None:
    """A job cancelled while queued returns RunCancelled with no step run."""
    job, recorder = make_job(DEV, t2i(3))
    job.cancel()
    (result,) = await backend.run([job])
    assert isinstance(result, RunCancelled) and recorder.of(Progress) == []


def test_a_family_without_a_cheap_preview_sends_no_preview_event() -> None:
    """A family whose ``preview`` answers None (``families/images.py``'s default) gets
    progress and logs but no empty Preview for the worker to publish."""
    import torch

    from openfal.backends.local.progress import StepReporter

    job, recorder = make_job(DEV, t2i(3))
    reporter = StepReporter([job], first_index=[0], preview=lambda latents, row: None, preview_interval=0.0)

    class Pipe:
        num_timesteps = 3

    for index in range(3):
        reporter(Pipe(), index, None, {"latents": torch.zeros(1, 4, 8, 8)})
    assert [(p.step, p.total) for p in recorder.of(Progress)] == [(1, 3), (2, 3), (3, 3)]
    assert recorder.of(Preview) == []
