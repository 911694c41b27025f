"""The local backend behind the real queue: submit over HTTP, a real worker runs it,
the result comes back in fal's shape with stored media."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from openfal.backends.builtin import BuiltinBackend
from openfal.backends.local import LocalBackend
from openfal.config import Settings
from tests.local.helpers import TEST_OPTIONS
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
