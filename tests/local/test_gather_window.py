"""The gather window: requests that arrive together at an idle local worker are claimed
together and share one pipeline call (OPENFAL_BATCH_GATHER_MS)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from openfal.backends.builtin import BuiltinBackend
from openfal.backends.local import LocalBackend
from openfal.config import Settings
from tests.local.helpers import TEST_OPTIONS
from tests.support import running_app, wait_status


async def test_requests_arriving_together_share_one_pipeline_call(make_settings: Callable[..., Settings]) -> None:
    # the longest window allowed: three in-process submits on a loaded CI machine fit in it
    settings = make_settings(batch_gather_ms=1000, poll_interval_seconds=0.05)
    local = LocalBackend(settings, options=TEST_OPTIONS)
    assert local.gather_seconds == 1.0
    async with running_app(settings, {"builtin": BuiltinBackend(), "local": local}) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        await local.start()  # the engine up first, so the window is all that separates the submits from the claim
        # and the worker idle, waiting for work: a window it opened at the app's start (a wake
        # as the app came up) must not end as the first submit lands (it claimed that one alone)
        await asyncio.sleep(local.gather_seconds + 0.2)
        urls = []
        for seed in range(3):
            body: dict[str, Any] = {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 2, "seed": seed}
            urls.append((await app.client.post("/fal-ai/flux-1/schnell", json=body, headers=auth)).json())
        results = []
        for u in urls:
            assert (await wait_status(app.client, u["status_url"], auth, timeout=60)).json()["status"] == "COMPLETED"
            results.append((await app.client.get(u["response_url"], headers=auth)).json())
    # one call: each request reports that call's seconds, and each its own seed
    assert len({r["timings"]["inference"] for r in results}) == 1
    assert [r["seed"] for r in results] == [0, 1, 2]


def test_no_gather_window_without_batching(make_settings: Callable[..., Settings]) -> None:
    assert LocalBackend(make_settings(max_batch_size=1)).gather_seconds == 0.0
