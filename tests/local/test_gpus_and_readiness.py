"""One worker process per GPU (``--gpus``), and readiness while preloaded models warm up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from openfal import gpu_workers
from openfal.backends.builtin import BuiltinBackend
from openfal.backends.local import LocalBackend
from openfal.config import Settings
from openfal.errors import ConfigError
from tests.local.helpers import TEST_OPTIONS
from tests.support import request_values, running_app, wait_status

BODY = {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 2, "seed": 3}


async def _until(condition: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


def test_no_gpus_option_means_one_engine_on_the_configured_device() -> None:
    assert gpu_workers.resolve_gpus("") == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a host without CUDA")
@pytest.mark.parametrize("spec", ["all", "0,1"])
def test_gpus_on_a_host_without_cuda_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="no CUDA device"):
        gpu_workers.resolve_gpus(spec)


def test_a_gpu_that_does_not_exist_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="GPUs 0..1"):
        gpu_workers.resolve_gpus("0,2", lambda: 2)


async def test_each_gpu_gets_a_supervised_worker_process_restarted_with_its_leases_released(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """This machine has no GPU. The only fake is the device enumeration (two "GPUs");
    each child is a real ``openfal worker`` process, with CUDA_VISIBLE_DEVICES set to its
    GPU, running its engine on the CPU. Each claims on its own, reports its device,
    label, models and memory to the worker registry; one killed with SIGKILL has its
    claimed request given back at once and is started again."""
    import os
    import signal

    monkeypatch.setattr(gpu_workers, "cuda_device_count", lambda: 2)
    monkeypatch.setattr(gpu_workers, "CHILD_DEVICE", "cpu")
    settings = make_settings(gpus="all", poll_interval_seconds=0.05, heartbeat_seconds=0.3, lease_seconds=600.0)
    backends: dict[str, Any] = {"builtin": BuiltinBackend(), "local": LocalBackend(settings, options=TEST_OPTIONS)}
    async with running_app(settings, backends) as app:
        rt = app.runtime
        supervisor = rt.gpu_workers
        assert supervisor is not None and [c.gpu for c in supervisor.children] == [0, 1]

        async def children_reported() -> dict[str, dict[str, Any]]:
            rows = await rt.registry.listing(include_gone=False)
            ids = {c.worker_id for c in supervisor.children}
            found = {row["id"]: row for row in rows if row["id"] in ids and row["backends"].get("local", {}).get("status", {}).get("started")}
            return found if len(found) == 2 else {}

        reported = await _until(children_reported, timeout=300)
        assert reported, "both GPU worker processes report to the registry"
        pids = {row["pid"] for row in reported.values()}
        assert len(pids) == 2 and os.getpid() not in pids
        statuses = {row["backends"]["local"]["status"]["label"]: row["backends"]["local"]["status"] for row in reported.values()}
        assert sorted(statuses) == ["gpu0", "gpu1"] and all(s["device"] == "cpu" for s in statuses.values())

        auth = {"Authorization": f"Key {await app.key()}"}
        bodies = [BODY, {**BODY, "image_size": {"width": 48, "height": 48}}]
        urls = [(await app.client.post("/fal-ai/flux-1/schnell", json=body, headers=auth)).json() for body in bodies]
        for u in urls:
            assert (await wait_status(app.client, u["status_url"], auth, timeout=120)).json()["status"] == "COMPLETED"
        records = [await rt.requests.get(u["request_id"]) for u in urls]
        assert {r.worker_id for r in records if r is not None} <= {c.worker_id for c in supervisor.children}

        async def models_reported() -> bool:
            rows = await rt.registry.listing(include_gone=False)
            return any(row["backends"].get("local", {}).get("status", {}).get("models") == ["flux-schnell"] for row in rows)

        assert await _until(models_reported, timeout=30)

        # a request held by gpu1's worker when its process dies (on a backend the children
        # do not serve, so nothing else claims it) goes back to the queue at once
        victim = supervisor.children[1]
        held = await rt.requests.insert(**request_values(backend="nowhere"))
        (claimed,) = await rt.requests.claim(backends=["nowhere"], worker_id=victim.worker_id, lease_seconds=600.0)
        assert claimed.id == held.id
        old_id, old_pid = victim.worker_id, victim.process.pid
        os.kill(old_pid, signal.SIGKILL)

        async def released() -> bool:
            record = await rt.requests.get(held.id)
            return record is not None and record.status == "IN_QUEUE"

        assert await _until(released, timeout=30)

        async def restarted() -> bool:
            rows = {row["id"] for row in await rt.registry.listing()}
            return victim.restarts == 1 and victim.process.pid != old_pid and old_id not in rows and victim.worker_id in rows

        assert await _until(restarted, timeout=300)


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
