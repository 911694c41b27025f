"""Every Qwen-Image and Z-Image Turbo endpoint behind the real queue: submitted over HTTP,
run by a real worker on the tiny models, the result in fal's shape with stored media."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from openfal.backends.builtin import BuiltinBackend
from openfal.backends.local import LocalBackend
from openfal.config import Settings
from tests.local.helpers import TEST_OPTIONS, data_uri
from tests.support import running_app, wait_status

IMAGE = data_uri(48, 32)
SMALL = {"image_size": {"width": 32, "height": 32}, "num_inference_steps": 2}
REQUESTS: dict[str, dict[str, Any]] = {
    "fal-ai/qwen-image": {"prompt": "a sign that says hello", **SMALL},
    "fal-ai/qwen-image-2512": {"prompt": "a fox", **SMALL, "output_format": "webp"},
    "fal-ai/qwen-image-2512/lora": {"prompt": "a fox", **SMALL},
    "fal-ai/qwen-image-edit-2511": {"prompt": "make it blue", "image_urls": [IMAGE], "num_inference_steps": 2},
    "fal-ai/qwen-image-edit-2511/lora": {"prompt": "make it blue", "image_urls": [IMAGE], **SMALL, "output_format": "jpeg"},
    "fal-ai/z-image/turbo": {"prompt": "a fox", **SMALL},
    "fal-ai/z-image/turbo/lora": {"prompt": "a fox", **SMALL},
    "fal-ai/z-image/turbo/image-to-image": {"prompt": "a fox", "image_url": IMAGE, "num_inference_steps": 4},
}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


async def test_every_qwen_and_z_image_endpoint_completes_through_the_queue(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(poll_interval_seconds=0.05, heartbeat_seconds=0.5)
    backends: dict[str, Any] = {"builtin": BuiltinBackend(), "local": LocalBackend(settings, options=TEST_OPTIONS)}
    async with running_app(settings, backends) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        for endpoint, body in REQUESTS.items():
            submitted = await app.client.post(f"/{endpoint}", json={**body, "seed": 7}, headers=auth)
            assert submitted.status_code == 200, submitted.text
            urls = submitted.json()
            status = await wait_status(app.client, urls["status_url"] + "?logs=1", auth, timeout=120)
            assert status.json()["status"] == "COMPLETED", (endpoint, status.text)
            steps = [entry["message"] for entry in status.json()["logs"] if entry["message"].startswith("step ")]
            assert steps and steps[-1].split("/")[0] == "step " + steps[-1].split("/")[1], (endpoint, steps)  # the last step ran
            result = (await app.client.get(urls["response_url"], headers=auth)).json()
            assert set(result) >= {"images", "timings", "seed", "has_nsfw_concepts", "prompt"}, endpoint
            (image,) = result["images"]
            expected = (48, 32) if "image_size" not in body else (32, 32)
            assert (image["width"], image["height"]) == expected, endpoint
            assert image["content_type"] == CONTENT_TYPES[body.get("output_format", "png")], endpoint
            assert result["seed"] == 7 and result["has_nsfw_concepts"] == [False] and result["prompt"] == body["prompt"]
            served = await app.client.get(httpx.URL(image["url"]).path)
            assert served.status_code == 200 and len(served.content) == image["file_size"], endpoint
