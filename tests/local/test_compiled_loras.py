"""LoRAs on a compiled engine (issue 11): weights copied into LoRA slots reserved before
compiling, so swapping LoRAs never recompiles; LoRAs written for unfused Q/K/V are
stacked onto the fused projections exactly. Tiny FLUX.1 [dev] on CPU, compiled once for
the module (64x64, one image).

Tolerance against the same LoRA on the eager (``off``) engine: every PNG pixel within 2
(float rounding of a different kernel order)."""

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

from openfal.backends.local import lora_bank, warmup
from openfal.backends.local.engine import Engine
from openfal.backends.local.families.flux1 import FAMILY as FLUX1
from openfal.backends.local.families.images import ImageItem
from openfal.backends.local.lora_files import LoraFile
from openfal.config import Settings
from openfal.errors import InputRejected
from tests.local.helpers import TEST_OPTIONS, make_job
from tests.local.lora_makers import kohya_lora, linear_shapes, peft_lora, transformer_of

ENDPOINT = "fal-ai/flux-lora"


def _settings(tmp: Path, models_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp, "models_dir": models_dir, "demo": True, "device": "cpu", "previews": False,
        "warmup_sizes": ("64x64",), "max_batch_images": 1, "lora_slots": 2, "lora_max_rank": 8,
    }  # fmt: skip
    return Settings(**{**values, **overrides})


def _lora(path: Path, scale: float = 1.0) -> LoraFile:
    return LoraFile(digest=hashlib.sha256(path.read_bytes()).hexdigest(), file=path, scale=scale, source=path.name)


def _generate(engine: Engine, *loras: LoraFile, seed: int = 3) -> np.ndarray:
    body = {
        "prompt": "a lighthouse", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 2,
        "seed": seed, "output_format": "png", "enable_safety_checker": False,
    }  # fmt: skip
    job, _ = make_job(ENDPOINT, body)
    plan = FLUX1.plan(ENDPOINT, job.input, TEST_OPTIONS)
    call = asyncio.run(FLUX1.prepare(plan, job.input, engine.settings, TEST_OPTIONS, None))
    batch = engine.generate_images(replace(call, loras=tuple(loras)), [ImageItem.of(job)])
    return np.asarray(batch.images[0][0].convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled-loras")


@pytest.fixture(scope="module")
def files(tmp: Path, models_dir: Path) -> dict[str, Path]:
    from openfal.backends.local.tiny import build_tiny_models

    build_tiny_models(models_dir, names=("flux-dev",))
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
def compiled(tmp: Path, models_dir: Path) -> Iterator[Engine]:
    engine = Engine(_settings(tmp, models_dir, acceleration="compile"), TEST_OPTIONS)
    engine.warm_up(["flux-dev"])
    yield engine
    engine.close()


def test_the_compiled_model_reserved_its_lora_slots_before_compiling(compiled: Engine) -> None:
    (spec,) = [s for s in compiled.cache.loaded() if s.model == "flux-dev"]
    (pipe,) = compiled.cache.get(spec)
    bank = lora_bank.bank_of(pipe.transformer)
    assert bank is not None and bank.slots == 2 and bank.rank == 8
    assert warmup.Shape("flux-dev", 64, 64, 1) in compiled.warmed


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


def test_a_compiled_engine_without_lora_slots_refuses_loras_instead_of_recompiling(tmp: Path, models_dir: Path, files: dict[str, Path]) -> None:
    engine = Engine(_settings(tmp, models_dir, acceleration="compile", lora_slots=0), TEST_OPTIONS)
    try:
        engine.warm_up(["flux-dev"])
        with pytest.raises(InputRejected, match="OPENFAL_LORA_SLOTS=0"):
            _generate(engine, _lora(files["a"]))
        _generate(engine)  # plain requests still run
    finally:
        engine.close()
