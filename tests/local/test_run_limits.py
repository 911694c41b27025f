"""What one request may hold the device for: an operator cap on output pixels (a 422
naming the cap, at submit when the size is known from the input), and runs stuck inside
one step are given up on cancel or at the run time limit (issue 8, F1)."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import torch
from PIL import Image

from openfal.backends.builtin import BuiltinBackend
from openfal.backends.local import LocalBackend
from openfal.config import Settings
from tests.local.helpers import TEST_OPTIONS
from tests.support import App, running_app, wait_status

SMALL = {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 3, "seed": 1}


@asynccontextmanager
async def local_app(make_settings: Callable[..., Settings], **overrides: Any) -> AsyncIterator[tuple[App, dict[str, str]]]:
    settings = make_settings(poll_interval_seconds=0.05, heartbeat_seconds=0.5, device="cpu", **overrides)
    backends: dict[str, Any] = {"builtin": BuiltinBackend(), "local": LocalBackend(settings, options=TEST_OPTIONS)}
    async with running_app(settings, backends) as app:
        yield app, {"Authorization": f"Key {await app.key()}"}


@contextmanager
def stuck_transformer() -> Iterator[tuple[threading.Event, threading.Event]]:
    """Every FLUX transformer call blocks until ``release`` is set: a step that hangs in
    the device call, where cooperative cancel (checked between steps) cannot reach. A
    global forward pre-hook on the real pipeline's module, removed on exit."""
    from diffusers import FluxTransformer2DModel

    entered, release = threading.Event(), threading.Event()

    def hook(module: torch.nn.Module, args: Any) -> None:
        if isinstance(module, FluxTransformer2DModel):
            entered.set()
            release.wait(60)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield entered, release
    finally:
        release.set()
        handle.remove()


async def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def data_uri(width: int, height: int) -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def test_an_image_past_the_pixel_cap_is_a_422_at_submit_naming_the_cap(make_settings: Callable[..., Settings]) -> None:
    async with local_app(make_settings, max_output_pixels=64 * 64) as (app, auth):
        body = {**SMALL, "image_size": {"width": 128, "height": 128}}
        response = await app.client.post("/fal-ai/flux-1/schnell", json=body, headers=auth)
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "image_size"] and "OPENFAL_MAX_OUTPUT_PIXELS" in error["msg"]
        assert error["ctx"]["limit"] == 64 * 64
        assert (await app.client.get("/api/requests", headers=auth)).json()["items"] == []


async def test_images_past_the_per_call_cap_are_a_422_at_submit(make_settings: Callable[..., Settings]) -> None:
    async with local_app(make_settings, max_call_pixels=2 * 64 * 48) as (app, auth):
        response = await app.client.post("/fal-ai/flux-1/schnell", json={**SMALL, "num_images": 3}, headers=auth)
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "num_images"] and "OPENFAL_MAX_CALL_PIXELS" in error["msg"]
        ok = await app.client.post("/fal-ai/flux-1/schnell", json={**SMALL, "num_images": 2}, headers=auth)
        assert ok.status_code == 200


async def test_fals_largest_schema_size_is_refused_by_the_default_cpu_cap(make_settings: Callable[..., Settings]) -> None:
    async with local_app(make_settings) as (app, auth):
        body = {**SMALL, "image_size": {"width": 14142, "height": 14142}}
        response = await app.client.post("/fal-ai/flux-1/dev", json=body, headers=auth)
        assert response.status_code == 422
        assert response.json()["detail"][0]["ctx"]["limit"] == 1024 * 1024


async def test_a_size_decided_by_the_input_image_is_checked_when_the_image_is_read(make_settings: Callable[..., Settings]) -> None:
    async with local_app(make_settings, max_output_pixels=64 * 64) as (app, auth):
        body = {"prompt": "a fox", "image_url": data_uri(128, 128), "num_inference_steps": 10, "strength": 0.2}
        submitted = await app.client.post("/fal-ai/flux-1/dev/image-to-image", json=body, headers=auth)
        assert submitted.status_code == 200, submitted.text
        await wait_status(app.client, submitted.json()["status_url"], auth, timeout=60)
        result = await app.client.get(submitted.json()["response_url"], headers=auth)
        assert result.status_code == 422
        assert "OPENFAL_MAX_OUTPUT_PIXELS" in result.json()["detail"][0]["msg"]


async def test_cancel_ends_a_run_stuck_inside_a_step_and_frees_the_slot(make_settings: Callable[..., Settings]) -> None:
    async with local_app(make_settings, stuck_run_grace_seconds=0.5) as (app, auth):
        with stuck_transformer() as (entered, release):
            first = (await app.client.post("/fal-ai/flux-1/schnell", json=SMALL, headers=auth)).json()
            await wait_for(entered.is_set, timeout=60)
            assert (await app.client.put(first["cancel_url"], headers=auth)).status_code == 202
            await wait_status(app.client, first["status_url"], auth, timeout=30)
            assert not release.is_set(), "the request ended while its step was still stuck"
            result = await app.client.get(first["response_url"], headers=auth)
            assert result.status_code == 499

            # the slot was given up: the next local request is claimed while the old step still hangs
            second = (await app.client.post("/fal-ai/flux-1/schnell", json={**SMALL, "seed": 2}, headers=auth)).json()

            async def second_running() -> bool:
                return (await app.client.get(second["status_url"], headers=auth)).json()["status"] == "IN_PROGRESS"

            deadline = time.monotonic() + 30
            while not await second_running():
                assert time.monotonic() < deadline, "the second request was never claimed"
                await asyncio.sleep(0.05)
            release.set()
        done = await wait_status(app.client, second["status_url"], auth, timeout=60)
        assert done.status_code == 200
        assert (await app.client.get(second["response_url"], headers=auth)).status_code == 200
        # the discarded run stored nothing: the first request's answer is still the cancel
        assert (await app.client.get(first["response_url"], headers=auth)).status_code == 499


async def test_the_run_time_limit_ends_a_run_stuck_inside_a_step(make_settings: Callable[..., Settings]) -> None:
    async with local_app(make_settings, max_run_seconds=0.5, stuck_run_grace_seconds=0.5) as (app, auth):
        with stuck_transformer() as (entered, release):
            submitted = (await app.client.post("/fal-ai/flux-1/schnell", json=SMALL, headers=auth)).json()
            await wait_for(entered.is_set, timeout=60)
            await wait_status(app.client, submitted["status_url"], auth, timeout=30)
            assert not release.is_set()
            result = await app.client.get(submitted["response_url"], headers=auth)
            assert result.status_code == 504
            assert result.json()["error_type"] == "request_timeout"
            assert "limit of 0.5 s" in result.json()["detail"]
