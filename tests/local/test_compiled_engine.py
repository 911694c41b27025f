"""The serving engine with compiled profiles, on the tiny FLUX.1 [dev] on CPU.

Compiling costs tens of seconds on a CI core, so each profile is compiled once for the
module (one warm-up size, 64x64 with one image, LoRA slots off and on) and the tests
share it.

Tolerances, against the ``off`` profile's PNG pixels (0..255):
* ``compile`` (fused QKV, regional compile with a dynamic token dimension) is lossless
  up to float rounding: every pixel within 2;
* ``fp8`` on CPU runs with torchao int8 weight-only standing in for float8 (float8
  GEMMs need a GPU of compute capability 8.9+); it is lossy by design: mean difference
  within 4, every pixel within 48.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from openfal.backends.local import acceleration as accel
from openfal.backends.local import warmup
from openfal.backends.local.engine import Engine
from openfal.backends.local.families.flux1 import FAMILY as FLUX1
from openfal.backends.local.families.images import ImageItem
from openfal.config import Settings
from openfal.events import Log
from tests.local.helpers import TEST_OPTIONS, make_job

ENDPOINT = "fal-ai/flux-1/dev"
CPU = torch.device("cpu")


def _settings(tmp: Path, models_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp, "models_dir": models_dir, "demo": True, "device": "cpu", "previews": False,
        "warmup_sizes": ("64x64",), "max_batch_images": 1,
    }  # fmt: skip
    return Settings(**{**values, **overrides})


def _generate(engine: Engine, width: int = 64, height: int = 64, seed: int = 3) -> tuple[np.ndarray, list[str]]:
    body = {
        "prompt": "a lighthouse", "image_size": {"width": width, "height": height}, "num_inference_steps": 2,
        "seed": seed, "output_format": "png", "enable_safety_checker": False,
    }  # fmt: skip
    job, recorder = make_job(ENDPOINT, body)
    plan = FLUX1.plan(ENDPOINT, job.input, TEST_OPTIONS)
    call = asyncio.run(FLUX1.prepare(plan, job.input, engine.settings, TEST_OPTIONS, None))
    batch = engine.generate_images(call, [ImageItem.of(job)])
    logs = [e.message for e in recorder.of(Log)]
    return np.asarray(batch.images[0][0].convert("RGB"), dtype=np.int16), logs


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="module")
def reference(tmp: Path, models_dir: Path) -> Iterator[np.ndarray]:
    engine = Engine(_settings(tmp, models_dir, acceleration="off"), TEST_OPTIONS)
    image, _ = _generate(engine)
    engine.close()
    yield image


@pytest.fixture(scope="module")
def compiled(tmp: Path, models_dir: Path) -> Iterator[Engine]:
    engine = Engine(_settings(tmp, models_dir, acceleration="compile"), TEST_OPTIONS)
    assert engine.acceleration.profile == "compile"
    engine.warm_up(["flux-dev"])
    yield engine
    engine.close()


def test_warm_up_compiles_each_configured_shape(compiled: Engine) -> None:
    assert compiled.warmed == {warmup.Shape("flux-dev", 64, 64, 1)}
    assert warmup.graphs_compiled() > 0


def test_compile_profile_matches_off_within_float_rounding(compiled: Engine, reference: np.ndarray) -> None:
    image, _ = _generate(compiled)
    assert np.abs(image - reference).max() <= 2


def test_a_warmed_shape_runs_with_no_recompilation(compiled: Engine) -> None:
    graphs = warmup.graphs_compiled()
    with torch.compiler.set_stance("fail_on_recompile"):  # any recompile raises
        _generate(compiled, seed=11)
    assert warmup.graphs_compiled() == graphs


def test_a_size_never_warmed_runs_compiled_with_no_stance_and_no_recompile(compiled: Engine) -> None:
    """Image-to-image, Kontext, Redux and custom sizes change only the token count: the
    dynamic graphs serve them, under the default stance (no process-wide eager
    fallback), and the warmed size still runs its graphs afterwards."""
    from torch._dynamo.eval_frame import _stance

    (pipe,) = compiled.cache.get(*[s for s in compiled.cache.loaded() if s.model == "flux-dev"])
    stances: list[str] = []
    handle = pipe.transformer.register_forward_pre_hook(lambda *args: stances.append(_stance.stance))
    graphs = warmup.graphs_compiled()
    try:
        _generate(compiled, width=80, height=48)
        _generate(compiled, width=96, height=112)
        with torch.compiler.set_stance("fail_on_recompile"):
            _generate(compiled, seed=12)  # the warmed size: its graph was not replaced
    finally:
        handle.remove()
    assert warmup.graphs_compiled() == graphs
    assert set(stances[:4]) == {"default"}


def test_a_size_never_warmed_matches_off(compiled: Engine, tmp: Path, models_dir: Path) -> None:
    engine = Engine(_settings(tmp, models_dir, acceleration="off"), TEST_OPTIONS)
    try:
        expected, _ = _generate(engine, width=80, height=48)
    finally:
        engine.close()
    image, _ = _generate(compiled, width=80, height=48)
    assert np.abs(image - expected).max() <= 2


def test_lora_slots_are_off_for_a_request_without_loras(compiled: Engine) -> None:
    from openfal.backends.local import lora_bank

    (pipe,) = compiled.cache.get(*[s for s in compiled.cache.loaded() if s.model == "flux-dev"])
    _generate(compiled)
    assert lora_bank.bank_of(pipe.transformer) is not None
    assert not lora_bank.is_active(pipe.transformer)
    layers = [m for m in pipe.transformer.modules() if hasattr(m, "_disable_adapters")]
    assert layers and all(m._disable_adapters for m in layers)


def test_lora_slots_sit_only_on_the_familys_targets_inside_its_blocks(compiled: Engine) -> None:
    from openfal.backends.local import lora_bank

    (pipe,) = compiled.cache.get(*[s for s in compiled.cache.loaded() if s.model == "flux-dev"])
    bank = lora_bank.bank_of(pipe.transformer)
    assert bank is not None
    assert all(path.startswith(FLUX1.compile_blocks) for path in bank.ranks)
    assert not {"x_embedder", "context_embedder", "proj_out", "norm_out.linear"} & set(bank.ranks)
    assert any(path.endswith("attn.to_qkv") for path in bank.ranks)


def test_high_acceleration_caches_around_the_compiled_blocks_without_recompiling(compiled: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "settings", compiled.settings.model_copy(update={"acceleration_high_threshold": 1.0}))
    body = {"prompt": "a lighthouse", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 4, "seed": 3, "acceleration": "high"}
    job, recorder = make_job(ENDPOINT, body)
    plan = FLUX1.request_plan(ENDPOINT, job.input, TEST_OPTIONS)
    call = asyncio.run(FLUX1.prepare(plan, job.input, compiled.settings, TEST_OPTIONS, None))
    graphs = warmup.graphs_compiled()
    batch = compiled.generate_images(call, [ImageItem.of(job)])
    assert warmup.graphs_compiled() == graphs
    assert batch.timings["cached_steps"] > 0
    assert [e.message for e in recorder.of(Log) if "first-block cache" in e.message]


def test_fused_originals_are_gone_from_the_served_transformer(compiled: Engine) -> None:
    (spec,) = [s for s in compiled.cache.loaded() if s.model == "flux-dev"]
    (pipe,) = compiled.cache.get(spec)
    names = {name.rsplit(".", 1)[-1] for name, _ in pipe.transformer.named_modules()}
    assert names.isdisjoint(accel.UNFUSED)


def test_fp8_plumbing_with_int8_standing_in_matches_off_within_tolerance(tmp: Path, models_dir: Path, reference: np.ndarray) -> None:
    torchao = pytest.importorskip("torchao.quantization")
    profile = accel.resolve("fp8", CPU, quantization=torchao.Int8WeightOnlyConfig)
    # no LoRA slots here: their adapter weights would hide what quantisation saves
    engine = Engine(_settings(tmp, models_dir, acceleration="fp8", lora_slots=0), TEST_OPTIONS, acceleration=profile)
    plain = Engine(_settings(tmp, models_dir, acceleration="off"), TEST_OPTIONS)
    try:
        engine.warm_up(["flux-dev"])
        image, _ = _generate(engine)
        assert np.abs(image - reference).mean() <= 4 and np.abs(image - reference).max() <= 48
        (spec,) = [s for s in engine.cache.loaded() if s.model == "flux-dev"]
        (pipe,) = engine.cache.get(spec)
        assert type(pipe.transformer.transformer_blocks[0].ff.net[2].weight).__name__ == "Int8Tensor"
        _generate(plain)
        assert engine.status()["loaded_bytes"] < plain.status()["loaded_bytes"]  # real (packed) bytes
    finally:
        engine.close()
        plain.close()


def test_compiled_kernels_are_kept_in_the_compile_cache_folder(compiled: Engine) -> None:
    folder = compiled.settings.effective_compile_cache_dir / "inductor"
    assert folder.is_dir() and any(folder.rglob("*"))
