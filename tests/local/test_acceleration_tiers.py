"""fal's ``acceleration`` input (none | regular | high) on the tiny FLUX.1 [dev], through
the local backend: ``high`` runs diffusers' First Block Cache and says how many
transformer calls reused the cached blocks; the tier is in the logs and the timings;
operators cap it per endpoint. The threshold is raised to 1.0 here so the tiny random
model's residuals (which change a lot between its few steps) still get cached."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from openfal.backends.local import LocalBackend
from openfal.backends.local.families.flux1 import FAMILY as FLUX1
from openfal.config import Settings
from openfal.events import Log
from tests.local.helpers import TEST_OPTIONS, output_of, pixels, run_one

DEV = "fal-ai/flux-1/dev"
BODY = {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 6, "seed": 5, "output_format": "png"}


async def _run(settings: Settings, tier: str) -> tuple[dict[str, Any], list[str], np.ndarray]:
    backend = LocalBackend(settings, options=TEST_OPTIONS)
    try:
        result, recorder = await run_one(backend, DEV, {**BODY, "acceleration": tier})
    finally:
        await backend.close()
    output = output_of(result)
    image = np.asarray(pixels(output.payload["images"][0]), dtype=np.int16)
    return output.payload["timings"], [e.message for e in recorder.of(Log)], image


async def test_high_reuses_cached_blocks_on_some_steps_and_says_so(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(acceleration_high_threshold=1.0)
    regular_timings, regular_logs, regular = await _run(settings, "regular")
    timings, logs, image = await _run(settings, "high")
    (line,) = [m for m in logs if m.startswith("acceleration high: first-block cache")]
    cached = int(line.split("on ")[-1].split(" of ")[0])
    assert 0 < cached < 6 and line.endswith("of 6 transformer calls")
    assert timings["cached_steps"] == cached and "acceleration_high" in timings
    assert "acceleration_regular" in regular_timings and "cached_steps" not in regular_timings
    assert [m for m in regular_logs if m.startswith("acceleration regular: no step cache")]
    assert np.abs(image - regular).max() > 0  # lossy: fewer block evaluations change the image


async def test_none_runs_every_block_and_the_cache_is_gone_afterwards(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(acceleration_high_threshold=1.0)
    await _run(settings, "high")
    timings, logs, _ = await _run(settings, "none")
    assert "acceleration_none" in timings and "cached_steps" not in timings
    assert [m for m in logs if m.startswith("acceleration none: no step cache")]


async def test_an_operator_cap_lowers_the_tier_and_says_so(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(acceleration_high_threshold=1.0, acceleration_caps={"fal-ai/flux-1/*": "regular"})
    timings, logs, _ = await _run(settings, "high")
    assert "acceleration_regular" in timings and "cached_steps" not in timings
    assert [m for m in logs if "acceleration high is capped at regular" in m]


def test_requests_of_different_tiers_never_share_a_call() -> None:
    keys = {FLUX1.batch_key(DEV, {"prompt": "x", "image_size": "square", "acceleration": tier}, TEST_OPTIONS) for tier in ("none", "high")}
    assert len(keys) == 2 and None not in keys


def test_sizes_past_the_batching_pixel_cap_run_alone() -> None:
    from dataclasses import replace

    options = replace(TEST_OPTIONS, batch_max_pixels=512 * 512)
    assert FLUX1.batch_key(DEV, {"prompt": "x", "image_size": "square"}, options) is not None  # 512x512
    assert FLUX1.batch_key(DEV, {"prompt": "x", "image_size": "landscape_4_3"}, options) is None  # 1024x768


async def test_a_rerolled_prompt_skips_the_text_encoders_and_gives_the_same_image(backend: LocalBackend) -> None:
    engine = backend.engine()
    first = output_of((await run_one(backend, DEV, {**BODY, "num_inference_steps": 2}))[0])
    misses = engine.prompts.misses
    again = output_of((await run_one(backend, DEV, {**BODY, "num_inference_steps": 2}))[0])
    reroll = output_of((await run_one(backend, DEV, {**BODY, "num_inference_steps": 2, "seed": 9}))[0])
    assert engine.prompts.misses == misses and engine.prompts.hits >= 2
    assert np.array_equal(np.asarray(pixels(first.payload["images"][0])), np.asarray(pixels(again.payload["images"][0])))
    assert not np.array_equal(np.asarray(pixels(first.payload["images"][0])), np.asarray(pixels(reroll.payload["images"][0])))
