"""Seeds reproduce, and batching several requests into one pipeline call gives each
request exactly the images it would have got alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from openfal.backends.local import LocalBackend
from openfal.errors import RunCancelled
from openfal.events import Progress
from tests.local.helpers import make_job, output_of, pixels, run_one

DEV = "fal-ai/flux-1/dev"
SMALL = {"image_size": {"width": 48, "height": 32}, "num_inference_steps": 2, "output_format": "png"}


def body(prompt: str, seed: int | None, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, **({"seed": seed} if seed is not None else {}), **SMALL, **extra}


def arrays(output: Any) -> list[np.ndarray]:
    return [np.asarray(pixels(blob), dtype=np.int16) for blob in output.payload["images"]]


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding in a different batch shape (at most 2/255 per channel)."""
    assert a.shape == b.shape
    assert int(np.abs(a - b).max()) <= 2


async def test_the_same_seed_reproduces_the_same_image(backend: LocalBackend) -> None:
    """Two runs with seed 7 give byte-identical PNGs."""
    first = output_of((await run_one(backend, DEV, body("a fox", 7)))[0])
    second = output_of((await run_one(backend, DEV, body("a fox", 7)))[0])
    assert first.payload["images"][0].read() == second.payload["images"][0].read()
    assert first.payload["seed"] == 7


async def test_different_seeds_give_different_images(backend: LocalBackend) -> None:
    """Seeds 7 and 8 differ (so the equality above is not vacuous)."""
    a = arrays(output_of((await run_one(backend, DEV, body("a fox", 7)))[0]))[0]
    b = arrays(output_of((await run_one(backend, DEV, body("a fox", 8)))[0]))[0]
    assert int(np.abs(a - b).max()) > 10


async def test_a_missing_seed_is_drawn_and_reported(backend: LocalBackend) -> None:
    """Without a seed a random one is used and returned, and it reproduces the image."""
    first = output_of((await run_one(backend, DEV, body("a fox", None)))[0])
    seed = first.payload["seed"]
    assert isinstance(seed, int)
    again = output_of((await run_one(backend, DEV, body("a fox", seed)))[0])
    assert_same(arrays(first)[0], arrays(again)[0])


async def test_image_k_of_a_request_uses_seed_plus_k(backend: LocalBackend) -> None:
    """num_images=2 with seed 5 gives the images of seeds 5 and 6 run alone."""
    pair = arrays(output_of((await run_one(backend, DEV, body("a fox", 5, num_images=2)))[0]))
    alone5 = arrays(output_of((await run_one(backend, DEV, body("a fox", 5)))[0]))[0]
    alone6 = arrays(output_of((await run_one(backend, DEV, body("a fox", 6)))[0]))[0]
    assert_same(pair[0], alone5)
    assert_same(pair[1], alone6)


def test_batch_keys_group_compatible_requests(backend: LocalBackend) -> None:
    """Same endpoint, size, steps and guidance share a key; prompts, seeds, counts and
    formats may differ; image-input endpoints are never batched."""
    key = backend.batch_key(DEV, make_job(DEV, body("a", 1))[0].input)
    assert key is not None
    assert backend.batch_key(DEV, make_job(DEV, body("b", 2, num_images=3, output_format="jpeg"))[0].input) == key
    assert backend.batch_key(DEV, make_job(DEV, body("a", 1, num_inference_steps=3))[0].input) != key
    assert backend.batch_key(DEV, make_job(DEV, body("a", 1, guidance_scale=5))[0].input) != key
    assert backend.batch_key(DEV, make_job(DEV, {**body("a", 1), "image_size": {"width": 64, "height": 32}})[0].input) != key
    schnell = "fal-ai/flux-1/schnell"
    assert backend.batch_key(schnell, make_job(schnell, body("a", 1))[0].input) != key
    i2i = "fal-ai/flux-1/dev/image-to-image"
    assert backend.batch_key(i2i, {"prompt": "a", "image_url": "data:,", "strength": 0.5, "num_inference_steps": 10}) is None


async def test_batched_requests_equal_their_unbatched_runs(backend: LocalBackend) -> None:
    """Three requests (different prompts, seeds and image counts) in one run() give,
    per request, the images each gives alone."""
    bodies = [body("a red fox", 11), body("a blue whale", 12, num_images=2), body("a green tree", 13)]
    jobs = [make_job(DEV, b, request_id=f"r{i}")[0] for i, b in enumerate(bodies)]
    assert len({backend.batch_key(DEV, job.input) for job in jobs}) == 1
    batched = [arrays(output_of(result)) for result in await backend.run(jobs)]
    for b, got in zip(bodies, batched, strict=True):
        alone = arrays(output_of((await run_one(backend, DEV, b))[0]))
        assert len(got) == len(alone) == b.get("num_images", 1)
        for x, y in zip(got, alone, strict=True):
            assert_same(x, y)


async def test_a_cancelled_job_in_a_batch_is_dropped_and_the_rest_complete(backend: LocalBackend) -> None:
    """Cancelling one of two batched jobs at its first step lets the call finish for the
    other; the cancelled one gets RunCancelled and no output."""
    (job_a, rec_a), (job_b, _) = make_job(DEV, body("a", 1), "a"), make_job(DEV, body("b", 2), "b")
    rec_a.on_event = lambda event: job_a.cancel() if isinstance(event, Progress) else None
    result_a, result_b = await backend.run([job_a, job_b])
    assert isinstance(result_a, RunCancelled)
    assert len(output_of(result_b).payload["images"]) == 1


@pytest.mark.parametrize("when", ["before", "during"])
async def test_a_batch_is_aborted_only_when_every_job_is_cancelled(backend: LocalBackend, when: str) -> None:
    """With every job cancelled (before the run, or at the first step) nothing is
    produced and every job gets RunCancelled."""
    (job_a, rec_a), (job_b, _) = make_job(DEV, body("a", 1), "a"), make_job(DEV, body("b", 2), "b")
    if when == "before":
        job_a.cancel()
        job_b.cancel()
    else:
        rec_a.on_event = lambda event: (job_a.cancel(), job_b.cancel()) if isinstance(event, Progress) else None
    results = await backend.run([job_a, job_b])
    assert all(isinstance(r, RunCancelled) for r in results)
