"""Warm-up: compile every shape a server expects before it says it is ready.

A compiled transformer block is specialised to its input shapes, which follow from the
model (text tokens: 512, schnell 256), the output size and the images in one call. The
engine compiles at warm-up, for ``OPENFAL_WARMUP_SIZES`` x batch sizes 1..
``OPENFAL_MAX_BATCH_IMAGES``, once per model as it loads (``OPENFAL_PRELOAD_MODELS`` at
start; any other model on the request that loads it). Requests then run:

* a warmed shape: the compiled graphs, with no recompilation;
* any other shape: eagerly (dynamo's ``force_eager`` stance), logged once per shape,
  so a request never waits for the GPU to compile.

The stance is process-wide, so one lock keeps an eager run on one GPU from turning
another GPU's warm-up eager too.

Compiled kernels go to a cache folder (``OPENFAL_COMPILE_CACHE_DIR``), so a restart
reads them instead of compiling again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("openfal.local")

#: held by warm-ups and by eager (unwarmed) runs; see the module docstring
STANCE_LOCK = threading.Lock()
_SIZE = re.compile(r"^(\d+)x(\d+)$")


@dataclass(frozen=True, slots=True, order=True)
class Shape:
    """What a compiled block is specialised to, as the engine sees it."""

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
    """Every shape to compile for ``model``, smallest first (deduplicated)."""
    sizes = sorted({parse_size(name) for name in size_names})
    return sorted({Shape(model, w, h, n) for w, h in sizes for n in range(1, max_images + 1)})


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


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run without compiling anything (a shape that was not warmed)."""
    import torch

    with STANCE_LOCK, torch.compiler.set_stance("force_eager"):
        yield


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process (tests assert no growth)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
