"""LoRA requests through the real queue: an uploaded LoRA works as ``path`` with the
private-address guard on, and a LoRA that cannot be fetched ends the request with a
clear 422 and gives the reserved credit back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from openfal import accounting
from openfal.backends.builtin import BuiltinBackend
from openfal.backends.local import LocalBackend
from openfal.config import Settings
from openfal.store import ledger
from tests.local.helpers import TEST_OPTIONS
from tests.local.lora_makers import FileServer, linear_shapes, peft_lora, transformer_of
from tests.support import running_app, wait_status

BODY = {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 2, "seed": 3}


def backends(settings: Settings) -> dict[str, Any]:
    return {"builtin": BuiltinBackend(), "local": LocalBackend(settings, options=TEST_OPTIONS)}


async def test_an_uploaded_lora_is_a_valid_path_with_the_guard_on(make_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path) -> None:
    settings = make_settings(poll_interval_seconds=0.05, allow_private_urls=False)
    lora = peft_lora(linear_shapes(transformer_of(models_dir)), tmp_path / "mine.safetensors")
    async with running_app(settings, backends(settings)) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        ticket = (await app.client.post("/storage/upload/initiate", json={"content_type": "application/octet-stream", "file_name": "mine.safetensors"}, headers=auth)).json()
        assert (await app.client.put(ticket["upload_url"], content=lora.read_bytes())).status_code == 200
        submitted = (await app.client.post("/fal-ai/flux-lora", json={**BODY, "loras": [{"path": ticket["file_url"], "scale": 0.8}]}, headers=auth)).json()
        done = await wait_status(app.client, submitted["status_url"] + "?logs=1", auth, timeout=120)
        assert "error" not in done.json(), done.json()
        assert any("LoRAs applied" in entry["message"] for entry in done.json()["logs"])
        assert (await app.client.get(submitted["response_url"], headers=auth)).status_code == 200


async def test_a_lora_that_cannot_be_fetched_ends_422_and_is_refunded(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(poll_interval_seconds=0.05)
    served = FileServer(tmp_path)
    try:
        async with running_app(settings, backends(settings)) as app:
            key, secret = await app.runtime.keys.create("customer", credit_micros=round(1.00 * accounting.MICROS))
            auth = {"Authorization": f"Key {secret}"}
            body = {**BODY, "loras": [{"path": served.url("gone.safetensors")}]}
            submitted = (await app.client.post("/fal-ai/flux-lora", json=body, headers=auth)).json()
            done = await wait_status(app.client, submitted["status_url"], auth, timeout=120)
            assert done.json()["error_type"] == "bad_request"
            result = await app.client.get(submitted["response_url"], headers=auth)
            assert result.status_code == 422
            (detail,) = result.json()["detail"]
            assert detail["loc"] == ["body", "loras", 0, "path"]
            assert "HTTP 404" in detail["msg"]
            assert await ledger.balance(app.runtime.db, key.id) == 1_000_000
            assert await ledger.ledger_sum(app.runtime.db, key.id) == 1_000_000
    finally:
        served.close()
