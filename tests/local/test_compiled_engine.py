"""The serving engine with compiled profiles, on the tiny FLUX.1 [dev] on CPU, and LoRAs
on it (issue 11): weights copied into LoRA slots reserved before compiling, so swapping
LoRAs never recompiles; LoRAs written for unfused Q/K/V are stacked onto the fused
projections exactly.

Compiling costs tens of seconds on a CI core, so each profile is compiled once for the
module and the tests share it: ``compile`` with two LoRA slots of rank 8 (one warm-up
size, 64x64 with one image, slots off and on), and ``fp8`` without slots.

Tolerances, against the ``off`` profile's PNG pixels (0..255):
* ``compile`` (fused QKV, regional compile with a dynamic token dimension) is lossless
  up to float rounding: every pixel within 2, with or without LoRAs (a different kernel
  order);
* ``fp8`` on CPU runs with torchao int8 weight-only standing in for float8 (float8
  GEMMs need a GPU of compute capability 8.9+); it is lossy by design: mean difference
  within 4, every pixel within 48.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from openfal.backends.local import acceleration as accel
from openfal.backends.local import lora_bank, warmup
from openfal.backends.local.engine import Engine
from openfal.backends.local.families.flux1 import FAMILY as FLUX1
from openfal.backends.local.families.images import ImageItem
from openfal.backends.local.lora_files import LoraFile
from openfal.config import Settings
from openfal.errors import InputRejected
from openfal.events import Log
from tests.local.helpers import TEST_OPTIONS, make_job
from tests.local.lora_makers import kohya_lora, linear_shapes, peft_lora, transformer_of

ENDPOINT = "fal-ai/flux-1/dev"
LORA_ENDPOINT = "fal-ai/flux-lora"
CPU = torch.device("cpu")


def _settings(tmp: Path, models_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp, "models_dir": models_dir, "demo": True, "device": "cpu", "previews": False,
        "warmup_sizes": ("64x64",), "max_batch_images": 1, "lora_slots": 2, "lora_max_rank": 8,
    }  # fmt: skip
    return Settings(**{**values, **overrides})


def _lora(path: Path, scale: float = 1.0) -> LoraFile:
    return LoraFile(digest=hashlib.sha256(path.read_bytes()).hexdigest(), file=path, scale=scale, source=path.name)


def _generate(engine: Engine, *loras: LoraFile, width: int = 64, height: int = 64, seed: int = 3) -> np.ndarray:
    endpoint = LORA_ENDPOINT if loras else ENDPOINT
    body = {
        "prompt": "a lighthouse", "image_size": {"width": width, "height": height}, "num_inference_steps": 2,
        "seed": seed, "output_format": "png", "enable_safety_checker": False,
    }  # fmt: skip
    job, _ = make_job(endpoint, body)
    plan = FLUX1.plan(endpoint, job.input, TEST_OPTIONS)
    call = asyncio.run(FLUX1.prepare(plan, job.input, engine.settings, TEST_OPTIONS, None))
    batch = engine.generate_images(replace(call, loras=tuple(loras)) if loras else call, [ImageItem.of(job)])
    return np.asarray(batch.images[0][0].convert("RGB"), dtype=np.int16)


def _served(engine: Engine) -> Any:
    (spec,) = [s for s in engine.cache.loaded() if s.model == "flux-dev"]
    (pipe,) = engine.cache.get(spec)
    return pipe


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="module")
def files(tmp: Path, models_dir: Path) -> dict[str, Path]:
    shapes = linear_shapes(transformer_of(models_dir))
    return {
        "a": peft_lora(shapes, tmp / "a.safetensors", seed=1),
        "b": peft_lora(shapes, tmp / "b.safetensors", seed=2, rank=8),
        "kohya": kohya_lora(shapes, tmp / "kohya.safetensors"),
        "big": peft_lora(shapes, tmp / "big.safetensors", rank=16),
    }


@pytest.fixture(scope="module")
def eager(tmp: Path, models_dir: Path) -> Iterator[Engine]:
    engine = Engine(_settings(tmp, models_dir, acceleration="off"), TEST_OPTIONS)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def reference(eager: Engine) -> np.ndarray:
    return _generate(eager)


@pytest.fixture(scope="module")
def compiled(tmp: Path, models_dir: Path) -> Iterator[Engine]:
    engine = Engine(_settings(tmp, models_dir, acceleration="compile"), TEST_OPTIONS)
    assert engine.acceleration.profile == "compile"
    engine.warm_up(["flux-dev"])
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def fp8(tmp: Path, models_dir: Path) -> Iterator[Engine]:
    """int8 weight-only standing in for float8, compiled; no LoRA slots (their adapter
    weights would hide what quantisation saves)."""
    torchao = pytest.importorskip("torchao.quantization")
    profile = accel.resolve("fp8", CPU, quantization=torchao.Int8WeightOnlyConfig)
    engine = Engine(_settings(tmp, models_dir, acceleration="fp8", lora_slots=0), TEST_OPTIONS, acceleration=profile)
    engine.warm_up(["flux-dev"])
    yield engine
    engine.close()


# -- compiling ----------------------------------------------------------------------
def test_warm_up_compiles_each_configured_shape(compiled: Engine) -> None:
    assert compiled.warmed == {warmup.Shape("flux-dev", 64, 64, 1)}
    assert warmup.graphs_compiled() > 0


def test_compile_profile_matches_off_within_float_rounding(compiled: Engine, reference: np.ndarray) -> None:
    assert np.abs(_generate(compiled) - reference).max() <= 2


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

    pipe = _served(compiled)
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


def test_a_size_never_warmed_matches_off(compiled: Engine, eager: Engine) -> None:
    expected = _generate(eager, width=80, height=48)
    assert np.abs(_generate(compiled, width=80, height=48) - expected).max() <= 2


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
    names = {name.rsplit(".", 1)[-1] for name, _ in _served(compiled).transformer.named_modules()}
    assert names.isdisjoint(accel.UNFUSED)


def test_compiled_kernels_are_kept_in_the_compile_cache_folder(compiled: Engine) -> None:
    folder = compiled.settings.effective_compile_cache_dir / "inductor"
    assert folder.is_dir() and any(folder.rglob("*"))


# -- fp8 ----------------------------------------------------------------------------


def test_fp8_plumbing_with_int8_standing_in_matches_off_within_tolerance(fp8: Engine, eager: Engine, reference: np.ndarray) -> None:
    image = _generate(fp8)
    assert np.abs(image - reference).mean() <= 4 and np.abs(image - reference).max() <= 48
    assert type(_served(fp8).transformer.transformer_blocks[0].ff.net[2].weight).__name__ == "Int8Tensor"
    assert fp8.status()["loaded_bytes"] < eager.status()["loaded_bytes"]  # real (packed) bytes


# -- LoRA slots ---------------------------------------------------------------------


def test_the_compiled_model_reserved_its_lora_slots_before_compiling(compiled: Engine) -> None:
    bank = lora_bank.bank_of(_served(compiled).transformer)
    assert bank is not None and bank.slots == 2 and bank.rank == 8
    assert warmup.Shape("flux-dev", 64, 64, 1) in compiled.warmed


def test_lora_slots_are_off_for_a_request_without_loras(compiled: Engine) -> None:
    pipe = _served(compiled)
    _generate(compiled)
    assert lora_bank.bank_of(pipe.transformer) is not None
    assert not lora_bank.is_active(pipe.transformer)
    layers = [m for m in pipe.transformer.modules() if hasattr(m, "_disable_adapters")]
    assert layers and all(m._disable_adapters for m in layers)


def test_lora_slots_sit_only_on_the_familys_targets_inside_its_blocks(compiled: Engine) -> None:
    bank = lora_bank.bank_of(_served(compiled).transformer)
    assert bank is not None
    assert all(path.startswith(FLUX1.compile_blocks) for path in bank.ranks)
    assert not {"x_embedder", "context_embedder", "proj_out", "norm_out.linear"} & set(bank.ranks)
    assert any(path.endswith("attn.to_qkv") for path in bank.ranks)


@pytest.mark.parametrize("name", ["a", "kohya"])
def test_a_lora_on_the_compiled_engine_matches_the_eager_engine(compiled: Engine, eager: Engine, files: dict[str, Path], name: str) -> None:
    plain = _generate(compiled)
    on_compiled = _generate(compiled, _lora(files[name]))
    on_eager = _generate(eager, _lora(files[name]))
    assert np.abs(on_compiled - plain).max() > 8, "the LoRA changed nothing"
    assert np.abs(on_compiled - on_eager).max() <= 2


def test_two_loras_with_scales_match_the_eager_engine(compiled: Engine, eager: Engine, files: dict[str, Path]) -> None:
    both = (_lora(files["a"], 0.6), _lora(files["b"], 1.3))
    assert np.abs(_generate(compiled, *both) - _generate(eager, *both)).max() <= 2


def test_swapping_loras_never_recompiles(compiled: Engine, files: dict[str, Path]) -> None:
    _generate(compiled, _lora(files["a"]))  # any first-use work happens here
    graphs = warmup.graphs_compiled()
    with torch.compiler.set_stance("fail_on_recompile"):  # a recompile raises
        first = _generate(compiled, _lora(files["b"]))
        _generate(compiled, _lora(files["a"]), _lora(files["kohya"], 0.5))
        plain = _generate(compiled)
        again = _generate(compiled, _lora(files["b"]))
    assert warmup.graphs_compiled() == graphs
    assert np.array_equal(first, again)
    assert np.abs(first - plain).max() > 8


def test_no_lora_on_the_compiled_engine_equals_the_base_model(compiled: Engine, eager: Engine, files: dict[str, Path]) -> None:
    _generate(compiled, _lora(files["a"]))
    assert np.abs(_generate(compiled) - _generate(eager)).max() <= 2


def test_a_lora_above_the_slot_rank_is_refused_not_recompiled(compiled: Engine, files: dict[str, Path]) -> None:
    with pytest.raises(InputRejected, match="OPENFAL_LORA_MAX_RANK"):
        _generate(compiled, _lora(files["big"]))


def test_three_loras_share_two_slots_and_match_the_eager_engine(compiled: Engine, eager: Engine, files: dict[str, Path]) -> None:
    """a (rank 4) and kohya (rank 4) fit one slot of rank 8 beside each other, b (rank 8) takes the other."""
    three = (_lora(files["a"], 0.5), _lora(files["b"]), _lora(files["kohya"], 0.8))
    assert np.abs(_generate(compiled, *three) - _generate(eager, *three)).max() <= 2


def test_loras_needing_more_rank_than_the_slots_hold_are_refused(compiled: Engine, files: dict[str, Path]) -> None:
    with pytest.raises(InputRejected, match="OPENFAL_LORA_SLOTS"):
        _generate(compiled, _lora(files["b"]), _lora(files["b"], 0.5), _lora(files["a"]))


def test_a_compiled_engine_without_lora_slots_refuses_loras_instead_of_recompiling(fp8: Engine, files: dict[str, Path]) -> None:
    graphs = warmup.graphs_compiled()
    with pytest.raises(InputRejected, match="OPENFAL_LORA_SLOTS=0"):
        _generate(fp8, _lora(files["a"]))
    _generate(fp8)  # plain requests still run
    assert warmup.graphs_compiled() == graphs
