"""The local backend behind the real queue: submit over HTTP, a real worker runs it,
the result comes back in fal's shape with stored media."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from openfal.backends.builtin import BuiltinBackend
from openfal.backends.local import LocalBackend
from openfal.config import Settings
from tests.local.helpers import TEST_OPTIONS, data_uri
from tests.support import running_app, wait_status


async def test_a_flux_request_completes_through_the_queue(make_settings: Callable[..., Settings]) -> None:
    """POST fal-ai/flux-1/schnell -> COMPLETED with step logs -> the result has an
    image URL serving a JPEG of the reported size, the seed and has_nsfw_concepts."""
    settings = make_settings(poll_interval_seconds=0.05, heartbeat_seconds=0.5)
    backends: dict[str, Any] = {"builtin": BuiltinBackend(), "local": LocalBackend(settings, options=TEST_OPTIONS)}
    async with running_app(settings, backends) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        body = {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 3, "seed": 21}
        submitted = await app.client.post("/fal-ai/flux-1/schnell", json=body, headers=auth)
        assert submitted.status_code == 200, submitted.text
        urls = submitted.json()
        status = await wait_status(app.client, urls["status_url"] + "?logs=1", auth, timeout=60)
        assert status.json()["status"] == "COMPLETED", status.text
        messages = [entry["message"] for entry in status.json()["logs"]]
        assert [m for m in messages if m.startswith("step ")] == ["step 1/3", "step 2/3", "step 3/3"]
        result = (await app.client.get(urls["response_url"], headers=auth)).json()
        (image,) = result["images"]
        assert (image["width"], image["height"], image["content_type"]) == (64, 48, "image/jpeg")
        assert result["seed"] == 21 and result["has_nsfw_concepts"] == [False] and result["prompt"] == "a fox"
        path = httpx.URL(image["url"]).path
        served = await app.client.get(path)
        assert served.status_code == 200 and served.content[:2] == b"\xff\xd8"


WAN_CASES = [
    ("fal-ai/wan/v2.2-5b/text-to-video", {}),
    ("fal-ai/wan/v2.2-5b/image-to-video", {"image_url": data_uri(64, 64)}),
    ("fal-ai/wan/v2.2-a14b/text-to-video", {"guidance_scale_2": 3.0}),
]


def _wan_app_settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    return make_settings(poll_interval_seconds=0.05, heartbeat_seconds=0.5, concurrency={"local": 1, "builtin": 1}, **overrides)


async def test_every_wan_endpoint_completes_through_the_queue(make_settings: Callable[..., Settings]) -> None:
    """Each Wan endpoint: COMPLETED with step and decode logs; fal's result (video File
    with url, content_type, file_name, file_size; seed; prompt); the URL serves the MP4."""
    settings = _wan_app_settings(make_settings)
    backends: dict[str, Any] = {"builtin": BuiltinBackend(), "local": LocalBackend(settings, options=TEST_OPTIONS)}
    async with running_app(settings, backends) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        for endpoint, extra in WAN_CASES:
            body = {"prompt": "a fox", "num_frames": 17, "num_inference_steps": 2, "seed": 5, **extra}
            submitted = await app.client.post(f"/{endpoint}", json=body, headers=auth)
            assert submitted.status_code == 200, submitted.text
            urls = submitted.json()
            status = await wait_status(app.client, urls["status_url"] + "?logs=1", auth, timeout=90)
            assert status.json()["status"] == "COMPLETED", status.text
            messages = [entry["message"] for entry in status.json()["logs"]]
            assert "step 2/2" in messages and "decoded frames 14-17 of 17" in messages
            result = (await app.client.get(urls["response_url"], headers=auth)).json()
            assert set(result) == {"video", "seed", "prompt"} and (result["seed"], result["prompt"]) == (5, "a fox")
            video = result["video"]
            assert video["content_type"] == "video/mp4" and video["file_name"].endswith(".mp4") and video["file_size"] > 0
            served = await app.client.get(httpx.URL(video["url"]).path)
            assert served.status_code == 200 and served.content[4:8] == b"ftyp" and len(served.content) == video["file_size"]
        # the encoder's temporary files were published and removed
        assert list((settings.data_dir.resolve() / "tmp" / "video").iterdir()) == []


async def test_a_video_cancelled_mid_run_ends_499_within_one_step_and_frees_the_slot(make_settings: Callable[..., Settings]) -> None:
    """Cancel once denoising is under way: 202, then client_cancelled (499) at most one
    step after the cancel was acknowledged; the one local slot then runs the next video."""
    settings = _wan_app_settings(make_settings)
    backends: dict[str, Any] = {"builtin": BuiltinBackend(), "local": LocalBackend(settings, options=TEST_OPTIONS)}
    async with running_app(settings, backends) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        body = {"prompt": "a fox", "num_frames": 17, "num_inference_steps": 50, "seed": 1}
        urls = (await app.client.post("/fal-ai/wan/v2.2-5b/text-to-video", json=body, headers=auth)).json()

        async def steps() -> int:
            logs = (await app.client.get(urls["status_url"] + "?logs=1", headers=auth)).json().get("logs") or []
            return sum(1 for entry in logs if entry["message"].startswith("step "))

        deadline = asyncio.get_running_loop().time() + 60
        while await steps() < 2:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        cancelled = await app.client.put(urls["cancel_url"], headers=auth)
        assert (cancelled.status_code, cancelled.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        at_cancel = await steps()
        done = await wait_status(app.client, urls["status_url"] + "?logs=1", auth, timeout=30)
        assert done.json()["error_type"] == "client_cancelled"
        assert (await app.client.get(urls["response_url"], headers=auth)).status_code == 499
        assert at_cancel <= await steps() <= at_cancel + 1 < 50
        nxt = (await app.client.post("/fal-ai/wan/v2.2-5b/text-to-video", json={**body, "num_inference_steps": 1}, headers=auth)).json()
        assert (await wait_status(app.client, nxt["status_url"], auth, timeout=60)).json()["status"] == "COMPLETED"


async def test_a_video_past_the_frames_times_pixels_cap_is_a_422_at_submit(make_settings: Callable[..., Settings]) -> None:
    """With a cap of 81 frames at the (test-sized) 64x32 frame, 161 frames are refused at
    submit with fal's 422 detail naming num_frames; 81 frames are accepted."""
    settings = _wan_app_settings(make_settings, max_video_pixels=64 * 32 * 81)
    backends: dict[str, Any] = {"builtin": BuiltinBackend(), "local": LocalBackend(settings, options=TEST_OPTIONS)}
    async with running_app(settings, backends) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        refused = await app.client.post("/fal-ai/wan/v2.2-5b/text-to-video", json={"prompt": "x", "num_frames": 161}, headers=auth)
        assert refused.status_code == 422, refused.text
        (detail,) = refused.json()["detail"]
        assert detail["loc"] == ["body", "num_frames"] and detail["type"] == "output_too_large"
        accepted = await app.client.post("/fal-ai/wan/v2.2-5b/text-to-video", json={"prompt": "x", "num_frames": 81, "num_inference_steps": 1}, headers=auth)
        assert accepted.status_code == 200
        await app.client.put(accepted.json()["cancel_url"], headers=auth)
