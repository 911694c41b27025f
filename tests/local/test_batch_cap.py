"""OPENFAL_MAX_BATCH_IMAGES caps the images of one pipeline call, VAE decode included,
and a batch split over several calls still gives each request its own images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from openfal.backends.base import Output
from openfal.backends.local import LocalBackend
from openfal.config import Settings
from tests.local.helpers import TEST_OPTIONS, make_job, pixels, run_one

DEV = "fal-ai/flux-1/dev"


def _body(seed: int, num_images: int = 1) -> dict[str, Any]:
    return {
        "prompt": "a fox", "seed": seed, "num_images": num_images, "image_size": {"width": 48, "height": 32},
        "num_inference_steps": 2, "output_format": "png",
    }  # fmt: skip


def _arrays(result: Any) -> list[np.ndarray]:
    assert isinstance(result, Output)
    return [np.asarray(pixels(blob), dtype=np.int16) for blob in result.payload["images"]]


async def test_the_vae_never_decodes_more_than_the_cap(make_settings: Callable[..., Settings]) -> None:
    local = LocalBackend(make_settings(max_batch_images=2), options=TEST_OPTIONS)
    try:
        alone = [_arrays((await run_one(local, DEV, _body(seed, n)))[0]) for seed, n in [(1, 1), (2, 2), (3, 1)]]
        engine = local.engine()
        (spec,) = [s for s in engine.cache.loaded() if s.model == "flux-dev"]
        (pipe,) = engine.cache.get(spec)
        decoded: list[int] = []
        hook = pipe.vae.decoder.register_forward_pre_hook(lambda module, args: decoded.append(int(args[0].shape[0])))
        try:
            jobs = [make_job(DEV, _body(seed, n), request_id=f"r{seed}")[0] for seed, n in [(1, 1), (2, 2), (3, 1)]]
            results = await local.run(jobs)
        finally:
            hook.remove()
    finally:
        await local.close()
    assert decoded and max(decoded) <= 2 and sum(decoded) == 4
    for got, expected in zip([_arrays(r) for r in results], alone, strict=True):
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert int(np.abs(a - b).max()) <= 2  # float rounding of another batch shape
