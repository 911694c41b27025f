"""A compiled engine (``OPENFAL_ACCELERATION=compile``) serving FLUX.2 [klein] 4B on CPU:
fused QKV, regional compile of the two FLUX.2 block types, LoRA slots; a warmed shape runs
with no recompilation, the image matches the uncompiled engine's within float rounding,
and a LoRA is copied into the slots without recompiling.

Compiling costs tens of seconds on a CI core: one engine, one warm-up shape (512x512,
FLUX.2's smallest, one image), shared by the module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from openfal.backends.local import warmup
from openfal.backends.local.engine import Engine
from openfal.backends.local.families.flux2 import FAMILY as FLUX2
from openfal.backends.local.families.images import ImageItem
from openfal.backends.local.lora_files import LoraFile
from openfal.config import Settings
from openfal.events import Log
from tests.local.helpers import TEST_OPTIONS, make_job
from tests.local.lora_makers import linear_shapes, peft_lora

ENDPOINT = "fal-ai/flux-2/klein/4b"
LORA_ENDPOINT = "fal-ai/flux-2/klein/4b/lora"


def _settings(tmp: Path, models_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp, "models_dir": models_dir, "demo": True, "device": "cpu", "previews": False,
        "warmup_sizes": ("512x512",), "max_batch_images": 1, "lora_max_rank": 8,
    }  # fmt: skip
    return Settings(**{**values, **overrides})


def _generate(engine: Engine, *, endpoint: str = ENDPOINT, seed: int = 3, loras: tuple[LoraFile, ...] = ()) -> tuple[np.ndarray, list[str]]:
    body = {"prompt": "a lighthouse", "image_size": {"width": 512, "height": 512}, "seed": seed, "enable_safety_checker": False}
    job, recorder = make_job(endpoint, body)
    plan = FLUX2.plan(endpoint, job.input, TEST_OPTIONS)
    call = asyncio.run(FLUX2.prepare(plan, job.input, engine.settings, TEST_OPTIONS, None))
    if loras:
        import dataclasses

        call = dataclasses.replace(call, loras=loras)
    batch = engine.generate_images(call, [ImageItem.of(job)])
    return np.asarray(batch.images[0][0].convert("RGB"), dtype=np.int16), [e.message for e in recorder.of(Log)]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flux2-compiled")


@pytest.fixture(scope="module")
def reference(tmp: Path, models_dir: Path) -> np.ndarray:
    engine = Engine(_settings(tmp, models_dir, acceleration="off"), TEST_OPTIONS)
    image, _ = _generate(engine)
    engine.close()
    return image


@pytest.fixture(scope="module")
def compiled(tmp: Path, models_dir: Path) -> Iterator[Engine]:
    engine = Engine(_settings(tmp, models_dir, acceleration="compile"), TEST_OPTIONS)
    assert engine.acceleration.profile == "compile"
    engine.warm_up(["flux-2-klein-4b"])
    yield engine
    engine.close()


def test_warm_up_compiles_the_configured_shape(compiled: Engine) -> None:
    assert compiled.warmed == {warmup.Shape("flux-2-klein-4b", 512, 512, 1)}
    assert warmup.graphs_compiled() > 0


def test_a_warmed_shape_runs_with_no_recompilation(compiled: Engine, reference: np.ndarray) -> None:
    graphs = warmup.graphs_compiled()
    with torch.compiler.set_stance("fail_on_recompile"):  # any recompile raises
        image, logs = _generate(compiled)
    assert warmup.graphs_compiled() == graphs
    assert not [m for m in logs if "not warmed" in m]
    assert np.abs(image - reference).max() <= 2


def test_a_lora_is_copied_into_the_slots_without_recompiling(compiled: Engine, reference: np.ndarray, tmp: Path, models_dir: Path) -> None:
    """The compiled transformer has fused Q/K/V: the LoRA's to_q/to_k/to_v parts are
    stacked onto the fused layer (lora_bank) and the graph does not change."""
    from diffusers import Flux2Transformer2DModel

    transformer = Flux2Transformer2DModel.from_pretrained(str(models_dir / "tiny" / "flux-2-klein-4b" / "transformer"))
    targets = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.to_qkv_mlp_proj")
    path = peft_lora(linear_shapes(transformer), tmp / "klein.safetensors", targets=targets, magnitude=2.0, rank=4)
    lora = LoraFile(source="klein.safetensors", file=path, digest="ab" * 32, scale=1.0)
    graphs = warmup.graphs_compiled()
    with torch.compiler.set_stance("fail_on_recompile"):
        styled, logs = _generate(compiled, endpoint=LORA_ENDPOINT, loras=(lora,))
        base, _ = _generate(compiled, endpoint=LORA_ENDPOINT)
    assert warmup.graphs_compiled() == graphs
    assert np.abs(styled - reference).mean() > 1 and np.abs(base - reference).max() <= 2
    assert any("LoRAs applied" in m for m in logs)
