"""Size rules at real FLUX sizes (no model needed), the multi-image stitch, and device
and dtype resolution."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from openfal.backends.local import LocalBackend, sizes
from openfal.backends.local.device import resolve_device, resolve_dtype
from openfal.backends.local.families.images import stitch
from openfal.config import Settings
from openfal.errors import ConfigError


@pytest.mark.parametrize(
    ("ratio", "size"),
    [("1:1", (1024, 1024)), ("16:9", (1360, 768)), ("4:3", (1184, 880)), ("21:9", (1568, 672)), ("9:16", (768, 1360))],
)
def test_aspect_ratios_cover_about_one_megapixel_in_multiples_of_16(ratio: str, size: tuple[int, int]) -> None:
    """Kontext's aspect_ratio gives ~1 MP, each side a multiple of 16."""
    width, height = sizes.aspect_size(ratio, sizes.KONTEXT_AREA)
    assert (width, height) == size
    assert abs(width * height - 2**20) / 2**20 < 0.03


@pytest.mark.parametrize(("image", "size"), [((4000, 3000), (1184, 880)), ((600, 600), (1024, 1024)), ((720, 1600), (688, 1504))])
def test_kontext_sizes_snap_to_its_training_resolutions(image: tuple[int, int], size: tuple[int, int]) -> None:
    """At 1 MP, an input's size maps to the preferred Kontext resolution nearest its
    aspect ratio, as diffusers' _auto_resize does."""
    assert sizes.kontext_size(*image, sizes.KONTEXT_AREA) == size


def test_image_size_floors_custom_sizes_and_maps_presets() -> None:
    """Custom sizes floor to 16 (never below 16); presets are fal's."""
    assert sizes.image_size({"width": 1000, "height": 777}) == (992, 768)
    assert sizes.image_size({"width": 8, "height": 20}) == (16, 16)
    assert sizes.image_size("portrait_16_9") == (576, 1024)


def test_stitching_places_references_side_by_side_at_one_height() -> None:
    """kontext/multi's canvas: every reference scaled to the first one's height,
    left to right, in order."""
    red, blue = Image.new("RGB", (40, 20), (255, 0, 0)), Image.new("RGB", (10, 10), (0, 0, 255))
    canvas = stitch([red, blue])
    assert canvas.size == (60, 20)
    assert canvas.getpixel((5, 5)) == (255, 0, 0) and canvas.getpixel((55, 15)) == (0, 0, 255)


def test_auto_device_is_cpu_in_fp32_without_cuda() -> None:
    """auto: CUDA in bf16 when present, else CPU in fp32; explicit names are honoured."""
    device = resolve_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_bad_device_settings_are_config_errors() -> None:
    """An unknown dtype, or CUDA asked for where there is none, fails with the setting named."""
    with pytest.raises(ConfigError, match="OPENFAL_DTYPE"):
        resolve_dtype("float8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="OPENFAL_DEVICE"):
            resolve_device("cuda")


def test_a_bad_dtype_fails_the_backends_start(tmp_path: Path) -> None:
    local = LocalBackend(Settings(data_dir=tmp_path, demo=True, dtype="float8"))
    with pytest.raises(ConfigError, match="OPENFAL_DTYPE"):
        asyncio.run(local.start())


def test_a_started_backend_reports_its_device_without_importing_the_engine(tmp_path: Path) -> None:
    """An API process or a worker that never runs a local model does not pay for the
    engine's imports (diffusers, transformers, PEFT: seconds of CPU): the start settles
    the device with torch alone. In a process of its own (this one imported them)."""
    script = (
        "import asyncio, json, sys\n"
        "from openfal.backends.local import LocalBackend\n"
        "from openfal.config import Settings\n"
        f"local = LocalBackend(Settings(data_dir={str(tmp_path)!r}, demo=True, device='cpu'))\n"
        "asyncio.run(local.start())\n"
        "print(json.dumps({'status': local.status(), 'diffusers': 'diffusers' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["diffusers"] is False
    assert report["status"]["started"] is True and report["status"]["device"] == "cpu" and report["status"]["dtype"] == "float32"
