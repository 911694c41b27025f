"""Warm-up: compile every graph variant requests run before the server says it is ready.

The compiled transformer blocks have a dynamic token dimension (acceleration.py): one
graph per block class serves every output size, text length (512, schnell 256) and
reference image (Kontext edits, Redux, image-to-image at any size). What still selects
a graph is the batch (dynamo specialises size 1, so batch 1 and batch 2+ are two
variants) and whether the LoRA slots are on (engine.py). So warm-up runs, per model as
it loads (``OPENFAL_PRELOAD_MODELS`` at start; any other model on the request that loads
it, before its first call), one-step calls at the largest ``OPENFAL_WARMUP_SIZES`` with
1 and 2 images (2 only when ``OPENFAL_MAX_BATCH_IMAGES`` allows batches), each with the
slots off and on. Requests then never compile and never run eager, and no process-wide
stance or lock is involved.

Compiled kernels go to a cache folder (``OPENFAL_COMPILE_CACHE_DIR``), so a restart
reads them instead of compiling again.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("openfal.local")

_SIZE = re.compile(r"^(\d+)x(\d+)$")


@dataclass(frozen=True, slots=True, order=True)
class Shape:
    """A warm-up call: the model, its size and its images (the batch variant)."""

    model: str
    width: int
    height: int
    images: int


def parse_size(value: str) -> tuple[int, int]:
    """A fal ``image_size`` preset name or ``WIDTHxHEIGHT`` -> (width, height), floored to 16."""
    from openfal.backends.local import sizes

    match = _SIZE.match(value.strip())
    if match:
        return sizes.floor16(int(match.group(1))), sizes.floor16(int(match.group(2)))
    try:
        return sizes.image_size(value.strip())
    except (ValueError, KeyError, TypeError):
        from openfal.errors import ConfigError

        raise ConfigError(f"OPENFAL_WARMUP_SIZES: {value!r} is neither a fal image_size preset nor WIDTHxHEIGHT") from None


def warmup_shapes(model: str, size_names: tuple[str, ...], max_images: int) -> list[Shape]:
    """The warm-up calls of ``model``: the largest configured size with one image, and
    with two when batches of several images can happen."""
    width, height = max((parse_size(name) for name in size_names), key=lambda wh: (wh[0] * wh[1], wh))
    return [Shape(model, width, height, n) for n in sorted({1, min(2, max_images)})]


def use_compile_cache(folder: Path) -> None:
    """Point inductor's and triton's caches at ``folder`` (kept across restarts).
    An operator's own ``TORCHINDUCTOR_CACHE_DIR`` wins; torch's default (which torch
    writes into the environment the first time it asks) does not."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    folder.mkdir(parents=True, exist_ok=True)
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "inductor")
        os.environ["TRITON_CACHE_DIR"] = str(folder / "triton")
    import torch._inductor.config as inductor

    inductor.fx_graph_cache = True


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process (tests assert no growth)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
