"""Z-Image Turbo on a compiled engine (``OPENFAL_ACCELERATION=compile``), on the tiny
model on CPU: warm-up compiles the configured shape, and a request of that shape then
runs with no recompilation and matches the uncompiled engine within float rounding.

The compiled blocks are specialised to the caption's token count (see
families/z_image.py), so the warmed shape is warm-up's size, image count and prompt: the
request asks for the warm-up prompt with another seed. Other prompt lengths recompile
until the engine compiles the token dimension dynamically (issue 22).
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
from openfal.backends.local.families.images import ImageItem
from openfal.backends.local.families.z_image import FAMILY, WARMUP_PROMPT
from openfal.config import Settings
from openfal.events import Log
from tests.local.helpers import TEST_OPTIONS, make_job

ENDPOINT = "fal-ai/z-image/turbo"
PROMPT = WARMUP_PROMPT


def _settings(tmp: Path, models_dir: Path, acceleration: str) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp, "models_dir": models_dir, "demo": True, "device": "cpu", "previews": False, "acceleration": acceleration,
        "warmup_sizes": ("32x32",), "max_batch_images": 1, "lora_slots": 0,
    }  # fmt: skip
    return Settings(**values)


def _generate(engine: Engine, seed: int = 3) -> tuple[np.ndarray, list[str]]:
    body = {"prompt": PROMPT, "image_size": {"width": 32, "height": 32}, "num_inference_steps": 2, "seed": seed, "output_format": "png"}
    job, recorder = make_job(ENDPOINT, {**body, "enable_safety_checker": False})
    plan = FAMILY.plan(ENDPOINT, job.input, TEST_OPTIONS)
    call = asyncio.run(FAMILY.prepare(plan, job.input, engine.settings, TEST_OPTIONS, None))
    batch = engine.generate_images(call, [ImageItem.of(job)])
    return np.asarray(batch.images[0][0].convert("RGB"), dtype=np.int16), [e.message for e in recorder.of(Log)]


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[Engine, Engine]]:
    tmp = tmp_path_factory.mktemp("compiled-z-image")
    compiled = Engine(_settings(tmp, models_dir, "compile"), TEST_OPTIONS)
    plain = Engine(_settings(tmp, models_dir, "off"), TEST_OPTIONS)
    assert compiled.acceleration.profile == "compile"
    compiled.warm_up(["z-image-turbo"])
    yield compiled, plain
    compiled.close()
    plain.close()


def test_warm_up_compiles_the_configured_shape(engines: tuple[Engine, Engine]) -> None:
    compiled, _ = engines
    assert warmup.Shape("z-image-turbo", 32, 32, 1) in compiled.warmed
    assert warmup.graphs_compiled() > 0


def test_a_warmed_shape_is_served_without_recompiling_and_matches_the_uncompiled_engine(engines: tuple[Engine, Engine]) -> None:
    compiled, plain = engines
    graphs = warmup.graphs_compiled()
    with torch.compiler.set_stance("fail_on_recompile"):  # any recompile raises
        image, logs = _generate(compiled)
    assert warmup.graphs_compiled() == graphs
    assert not [m for m in logs if "not warmed" in m]
    reference, _ = _generate(plain)
    assert np.abs(image - reference).max() <= 2
