"""LoRAs on Qwen-Image and Z-Image Turbo: tiny LoRAs made in code against the tiny
transformers, in the layouts diffusers loads for them (PEFT keys on the family's own
module names; Qwen-Image's also in the ``diffusion_model.`` layout of DiffSynth and
ComfyUI), installed by name and applied per request."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from openfal.backends.local import LocalBackend
from openfal.backends.local.families.qwen_image import FAMILY as QWEN
from openfal.backends.local.families.z_image import FAMILY as Z_IMAGE
from openfal.config import Settings
from openfal.errors import InputRejected
from tests.local.helpers import TEST_OPTIONS, output_of, run_one
from tests.local.lora_makers import linear_shapes, peft_lora


def _shapes(models_dir: Path, model: str, cls: str) -> dict[str, tuple[int, int]]:
    import diffusers

    from openfal.backends.local.tiny import build_tiny_models, tiny_dir

    build_tiny_models(models_dir, names=(model,))
    return linear_shapes(getattr(diffusers, cls).from_pretrained(str(tiny_dir(models_dir) / model / "transformer")))


@pytest.fixture(scope="module")
def qwen_shapes(models_dir: Path) -> dict[str, tuple[int, int]]:
    return _shapes(models_dir, "qwen-image-2512", "QwenImageTransformer2DModel")


@pytest.fixture(scope="module")
def z_shapes(models_dir: Path) -> dict[str, tuple[int, int]]:
    return _shapes(models_dir, "z-image-turbo", "ZImageTransformer2DModel")


@pytest.fixture
async def lora_backend(make_settings: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[LocalBackend]:
    installed = tmp_path / "installed"
    installed.mkdir()
    backend = LocalBackend(make_settings(loras_dir=installed, lora_max_rank=16), options=TEST_OPTIONS)
    await backend.start()
    yield backend
    await backend.close()


def installed(backend: LocalBackend) -> Path:
    assert backend.settings.loras_dir is not None
    return backend.settings.loras_dir


def body(*loras: dict[str, Any], seed: int = 5) -> dict[str, Any]:
    return {
        "prompt": "a fox",
        "image_size": {"width": 32, "height": 32},
        "num_inference_steps": 2,
        "seed": seed,
        "output_format": "png",
        "loras": list(loras),
    }


async def image(backend: LocalBackend, endpoint: str, request: dict[str, Any]) -> np.ndarray:
    blob = output_of((await run_one(backend, endpoint, request))[0]).payload["images"][0]
    return np.asarray(Image.open(io.BytesIO(blob.read())).convert("RGB"), dtype=np.int16)


#: (endpoint, shapes fixture, the family's LoRA targets)
FAMILIES = [
    ("fal-ai/qwen-image-2512/lora", "qwen_shapes", QWEN.lora_targets),
    ("fal-ai/z-image/turbo/lora", "z_shapes", Z_IMAGE.lora_targets),
]


@pytest.mark.parametrize(("endpoint", "shapes_fixture", "targets"), FAMILIES, ids=["qwen-image", "z-image"])
async def test_a_lora_changes_the_image_and_scale_zero_equals_none(
    lora_backend: LocalBackend, request: pytest.FixtureRequest, endpoint: str, shapes_fixture: str, targets: tuple[str, ...]
) -> None:
    shapes = request.getfixturevalue(shapes_fixture)
    peft_lora(shapes, installed(lora_backend) / "style.safetensors", targets=targets)
    plain = await image(lora_backend, endpoint, body())
    styled = await image(lora_backend, endpoint, body({"path": "style"}))
    zero = await image(lora_backend, endpoint, body({"path": "style", "scale": 0}))
    assert np.abs(plain - styled).max() > 8
    assert np.array_equal(plain, zero)


async def test_a_lora_applies_to_qwen_edits(lora_backend: LocalBackend, qwen_shapes: dict) -> None:
    from tests.local.helpers import data_uri

    peft_lora(qwen_shapes, installed(lora_backend) / "style.safetensors", targets=QWEN.lora_targets)
    edit = {**body(), "image_urls": [data_uri(32, 32)]}
    plain = await image(lora_backend, "fal-ai/qwen-image-edit-2511/lora", edit)
    styled = await image(lora_backend, "fal-ai/qwen-image-edit-2511/lora", {**edit, "loras": [{"path": "style"}]})
    assert np.abs(plain - styled).max() > 8


async def test_a_qwen_lora_in_the_diffusion_model_layout_loads(lora_backend: LocalBackend, qwen_shapes: dict) -> None:
    """DiffSynth and ComfyUI save Qwen-Image LoRAs as ``diffusion_model.<module>.lora_A``;
    diffusers' Qwen loader renames them to the transformer's modules."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, (fan_in, fan_out) in qwen_shapes.items():
        if name.endswith(("attn.to_q", "attn.to_v", "img_mlp.net.2")):
            state[f"diffusion_model.{name}.lora_A.weight"] = torch.randn(4, fan_in, generator=generator) * 3
            state[f"diffusion_model.{name}.lora_B.weight"] = torch.randn(fan_out, 4, generator=generator) * 3
    save_file(state, str(installed(lora_backend) / "comfy.safetensors"))
    plain = await image(lora_backend, "fal-ai/qwen-image-2512/lora", body())
    styled = await image(lora_backend, "fal-ai/qwen-image-2512/lora", body({"path": "comfy"}))
    assert np.abs(plain - styled).max() > 8


async def test_a_flux_lora_on_z_image_is_refused_on_its_field(lora_backend: LocalBackend) -> None:
    """A LoRA for another family's layers changes nothing here: refused, not ignored."""
    flux = {
        "transformer.single_transformer_blocks.0.proj_out.lora_A.weight": torch.ones(4, 48),
        "transformer.single_transformer_blocks.0.proj_out.lora_B.weight": torch.ones(48, 4),
    }
    save_file(flux, str(installed(lora_backend) / "flux.safetensors"))
    result, _ = await run_one(lora_backend, "fal-ai/z-image/turbo/lora", body({"path": "flux"}))
    assert isinstance(result, InputRejected)
    assert result.detail[0]["loc"][-2:] == ["path"] or "path" in result.detail[0]["loc"]
