"""Out of device memory, and broken weights, are answers (503), never crashes (500).

A CPU cannot be made to run out of device memory on demand, so the tests raise
``torch.OutOfMemoryError`` from the real tiny modules (a forward hook on the
transformer; the transformer's ``.to`` while loading), which is where and how CUDA
raises it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from openfal.backends.base import Output
from openfal.backends.local import LocalBackend
from openfal.errors import RunError
from tests.local.helpers import TEST_OPTIONS, run_one

DEV = "fal-ai/flux-1/dev"
BODY = {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 2, "seed": 1}


def _oom_once() -> Callable[..., None]:
    fired: list[bool] = []

    def hook(*args: Any) -> None:
        if not fired:
            fired.append(True)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    return hook


async def test_an_out_of_memory_run_ends_503_and_the_next_request_runs(backend: LocalBackend) -> None:
    first, _ = await run_one(backend, DEV, BODY)
    assert isinstance(first, Output)
    engine = backend.engine()
    (spec,) = [s for s in engine.cache.loaded() if s.model == "flux-dev"]
    (pipe,) = engine.cache.get(spec)
    handle = pipe.transformer.register_forward_pre_hook(_oom_once())
    try:
        failed, _ = await run_one(backend, DEV, BODY)
        after, _ = await run_one(backend, DEV, BODY)
    finally:
        handle.remove()
    assert isinstance(failed, RunError)
    assert (failed.status_code, failed.error_type) == (503, "runner_scheduling_failure")
    assert "ran out of memory" in failed.message
    assert isinstance(after, Output)


async def test_out_of_memory_while_loading_ends_503_and_a_later_load_succeeds(
    make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import FluxTransformer2DModel

    original = FluxTransformer2DModel.to
    oom = _oom_once()

    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        oom()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FluxTransformer2DModel, "to", to)
    local = LocalBackend(make_settings(), options=TEST_OPTIONS)
    try:
        failed, _ = await run_one(local, DEV, BODY)
        assert isinstance(failed, RunError) and failed.status_code == 503
        assert "loading flux-dev" in failed.message
        assert local.engine().cache.loaded() == []  # nothing half-placed is kept
        after, _ = await run_one(local, DEV, BODY)
        assert isinstance(after, Output)
    finally:
        await local.close()


async def test_a_corrupt_weights_file_is_a_503_naming_the_model(make_settings: Callable[..., Any], models_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "flux-dev"
    shutil.copytree(models_dir / "tiny" / "flux-dev", broken)
    (weights,) = (broken / "transformer").glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    local = LocalBackend(make_settings(demo=False, model_paths={"flux-dev": str(broken)}), options=TEST_OPTIONS)
    try:
        failed, _ = await run_one(local, DEV, BODY)
    finally:
        await local.close()
    assert isinstance(failed, RunError)
    assert (failed.status_code, failed.error_type) == (503, "runner_scheduling_failure")
    assert "flux-dev" in failed.message and "could not be loaded" in failed.message


async def test_an_out_of_memory_error_keeps_no_tensor_of_the_failed_call_alive(backend: LocalBackend) -> None:
    """The failed call's latents (the transformer's input) and a tensor allocated in the
    failing frame are freed before the 503 is raised, while the 503 is still held."""
    import asyncio
    import gc
    import weakref

    from openfal.backends.local.families.flux1 import FAMILY as FLUX1
    from openfal.backends.local.families.images import ImageItem
    from openfal.errors import DeviceOutOfMemory
    from tests.local.helpers import make_job

    engine = backend.engine()
    job, _ = make_job(DEV, BODY)
    plan = FLUX1.request_plan(DEV, job.input, TEST_OPTIONS)
    call = await FLUX1.prepare(plan, job.input, engine.settings, TEST_OPTIONS, None)
    await asyncio.to_thread(engine.generate_images, call, [ImageItem.of(job)])  # loads the pipeline
    (pipe,) = engine.cache.get(*[s for s in engine.cache.loaded() if s.model == "flux-dev"])
    refs: list[weakref.ref[torch.Tensor]] = []

    def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        scratch = torch.ones(1 << 20)  # held only by this frame, as activations are
        refs.extend([weakref.ref(kwargs["hidden_states"]), weakref.ref(scratch)])
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    del pipe
    try:
        with pytest.raises(DeviceOutOfMemory) as raised:
            await asyncio.to_thread(engine.generate_images, call, [ImageItem.of(job)])
    finally:
        handle.remove()
    assert raised.value.__context__ is None and raised.value.__cause__ is None
    gc.collect()  # what release_memory did before raising; nothing new may be left to collect
    assert len(refs) == 2 and all(ref() is None for ref in refs)


@pytest.mark.parametrize("where", ["safety check", "LoRA copy", "warm-up"])
async def test_out_of_memory_outside_the_pipeline_call_is_a_503_too(backend: LocalBackend, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = backend.engine()

    def oom(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    if where == "safety check":

        class Checker:
            active = True
            __call__ = staticmethod(oom)

        monkeypatch.setattr(engine, "_safety", Checker())
    elif where == "LoRA copy":
        monkeypatch.setattr(engine.adapters, "apply", oom)
    else:
        monkeypatch.setattr(engine, "_warm_model", oom)
    failed, _ = await run_one(backend, DEV, BODY)
    assert isinstance(failed, RunError)
    assert (failed.status_code, failed.error_type) == (503, "runner_scheduling_failure")
