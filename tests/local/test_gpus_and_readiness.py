"""One engine per GPU (``--gpus``), and readiness while preloaded models warm up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from openfal.backends.builtin import BuiltinBackend
from openfal.backends.local import LocalBackend, gpus
from openfal.config import Settings
from openfal.errors import ConfigError
from tests.local.helpers import TEST_OPTIONS
from tests.support import running_app, wait_status

BODY = {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 2, "seed": 3}


async def _until(condition: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


def test_no_gpus_option_means_one_engine_on_the_configured_device() -> None:
    assert gpus.resolve_gpus("") == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a host without CUDA")
@pytest.mark.parametrize("spec", ["all", "0,1"])
def test_gpus_on_a_host_without_cuda_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="no CUDA device"):
        gpus.resolve_gpus(spec)


async def test_each_gpu_engine_claims_on_its_own_and_reports_its_device(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """This machine has no GPU: two CPU engines stand in for GPUs 0 and 1 (the only
    fake: which devices ``--gpus 0,1`` names). Both engines are held busy, so two
    requests can run at once only if each engine's worker claimed one on its own."""
    monkeypatch.setattr(gpus, "resolve_gpus", lambda spec: ["cpu", "cpu"])
    settings = make_settings(gpus="0,1", poll_interval_seconds=0.05, heartbeat_seconds=0.3)
    backends: dict[str, Any] = {"builtin": BuiltinBackend(), "local": LocalBackend(settings, options=TEST_OPTIONS)}
    async with running_app(settings, backends) as app:
        rt = app.runtime
        engines = {label: backend.engine() for label, backend in rt._engine_backends.items()}  # type: ignore[attr-defined]
        assert sorted(engines) == ["gpu0", "gpu1"]
        for engine in engines.values():
            engine.lock.acquire()
        auth = {"Authorization": f"Key {await app.key()}"}
        try:
            # two sizes: two batch keys, so no single claim can take both
            bodies = [BODY, {**BODY, "image_size": {"width": 48, "height": 48}}]
            urls = [(await app.client.post("/fal-ai/flux-1/schnell", json=body, headers=auth)).json() for body in bodies]

            async def both_running() -> bool:
                states = [(await app.client.get(u["status_url"], headers=auth)).json()["status"] for u in urls]
                return states == ["IN_PROGRESS", "IN_PROGRESS"]

            assert await _until(both_running)
        finally:
            for engine in engines.values():
                engine.lock.release()
        for u in urls:
            assert (await wait_status(app.client, u["status_url"], auth, timeout=60)).json()["status"] == "COMPLETED"
        records = [await rt.requests.get(u["request_id"]) for u in urls]
        assert len({r.worker_id for r in records if r is not None}) == 2

        async def both_reported() -> list[dict[str, Any]]:
            rows = await rt.registry.listing(include_gone=False)
            found = [row["backends"]["local"]["status"] for row in rows if "local" in row["backends"]]
            loaded = [s for s in found if s.get("loaded")]  # reports from before the runs show none
            return loaded if {s.get("label") for s in loaded} == {"gpu0", "gpu1"} else []

        statuses = await _until(both_reported)
        assert statuses and all(s["device"] == "cpu" and s["loaded"][0]["model"] == "flux-schnell" for s in statuses)


async def test_ready_is_503_until_the_preloaded_models_are_warm(make_settings: Callable[..., Settings]) -> None:
    """The warm-up is held at its start (the engine's lock, taken first by the test)."""
    settings = make_settings(preload_models=("flux-schnell",), acceleration="off")
    local = LocalBackend(settings, options=TEST_OPTIONS)
    engine = local.engine()
    engine.lock.acquire()
    released = False
    try:
        async with running_app(settings, {"builtin": BuiltinBackend(), "local": local}) as app:
            warming = await app.client.get("/health/ready")
            assert warming.status_code == 503 and warming.json()["status"] == "warming_up"
            engine.lock.release()
            released = True

            async def ready() -> bool:
                return (await app.client.get("/health/ready")).status_code == 200

            assert await _until(ready)
            assert [s.model for s in engine.cache.loaded()] == ["flux-schnell"]
    finally:
        if not released:
            engine.lock.release()
