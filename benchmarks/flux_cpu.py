"""FLUX on CPU through the local backend, on the tiny random-weight set: seconds per
denoising step and per image at 1024x768 and 1024x1024, for

  fp32        plain float32, one request per call          <- baseline
  bf16        OPENFAL_DTYPE=bfloat16, one request per call
  fp32-batch2 two compatible requests batched into one call

Each figure is printed absolute and as a ratio to the baseline at the same size. The
tiny transformer is ~70 k parameters, so this measures the pipeline around the model
(text encoders, latent packing, scheduler, VAE decode, JPEG encoding, the backend's
callback) at FLUX's real token counts, not FLUX's own compute; see engine_gpu.py for that.

Seconds per step come from the timestamps of the backend's Progress events (first to
last step, so neither text encoding nor decoding is included); seconds per image are
the wall time of ``LocalBackend.run`` divided by the images it returned.

    .venv/bin/python benchmarks/flux_cpu.py [--steps 4] [--repeats 3] [--sizes 1024x768,1024x1024]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sizes import parse_sizes  # noqa: E402

from openfal.backends.base import Job, Output  # noqa: E402
from openfal.backends.local import LocalBackend  # noqa: E402
from openfal.config import Settings  # noqa: E402
from openfal.endpoints.catalog import CATALOG, validate_input  # noqa: E402
from openfal.events import Event, Progress  # noqa: E402

ENDPOINT = "fal-ai/flux-1/dev"


@dataclass(frozen=True)
class Config:
    name: str
    dtype: str
    batch: int


CONFIGS = [Config("fp32", "float32", 1), Config("bf16", "bfloat16", 1), Config("fp32-batch2", "float32", 2)]


@dataclass(frozen=True)
class Sample:
    step_seconds: float
    image_seconds: float


async def one_run(backend: LocalBackend, width: int, height: int, steps: int, batch: int) -> Sample:
    stamps: list[float] = []

    def emit(event: Event) -> None:
        if isinstance(event, Progress):
            stamps.append(time.perf_counter())

    jobs = []
    for i in range(batch):
        body = {"prompt": f"a lighthouse {i}", "image_size": {"width": width, "height": height}, "num_inference_steps": steps, "seed": i}
        data = validate_input(CATALOG[ENDPOINT], body)
        jobs.append(Job(request_id=f"bench-{i}", endpoint_id=ENDPOINT, input=data, emit=emit if i == 0 else None))
    assert len({backend.batch_key(ENDPOINT, job.input) for job in jobs}) == 1
    started = time.perf_counter()
    results = await backend.run(jobs)
    elapsed = time.perf_counter() - started
    images = sum(len(r.payload["images"]) for r in results if isinstance(r, Output))
    assert images == batch, results
    step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return Sample(step_seconds=step, image_seconds=elapsed / images)


async def measure(config: Config, models_dir: Path, sizes: list[tuple[int, int]], steps: int, repeats: int) -> dict[tuple[int, int], Sample]:
    settings = Settings(data_dir=models_dir, models_dir=models_dir, demo=True, dtype=config.dtype, device="cpu", max_batch_size=config.batch)
    backend = LocalBackend(settings)
    await backend.start()
    out = {}
    try:
        for width, height in sizes:
            await one_run(backend, width, height, steps, config.batch)  # warm-up: loading, oneDNN kernels
            samples = [await one_run(backend, width, height, steps, config.batch) for _ in range(repeats)]
            out[(width, height)] = Sample(
                statistics.median(s.step_seconds for s in samples), statistics.median(s.image_seconds for s in samples)
            )
    finally:
        await backend.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="1024x768,1024x1024")
    parser.add_argument("--models-dir", type=Path, default=None, help="where the tiny set is (built if missing)")
    args = parser.parse_args()
    sizes = parse_sizes(args.sizes)
    models_dir = args.models_dir or Path(tempfile.mkdtemp(prefix="openfal-flux-cpu-"))
    import torch

    print("command:", " ".join([".venv/bin/python", *sys.argv]))
    print(f"machine: {os.cpu_count()} cpus, torch {torch.__version__} with {torch.get_num_threads()} threads; tiny set in {models_dir}")
    print(f"{ENDPOINT} on the tiny set, {args.steps} steps, median of {args.repeats} after one warm-up run")
    results = {c.name: asyncio.run(measure(c, models_dir, sizes, args.steps, args.repeats)) for c in CONFIGS}
    print(f"{'size':<10} {'config':<12} {'s/step':>8} {'ratio':>6} {'s/image':>8} {'ratio':>6}")
    for size in sizes:
        base = results[CONFIGS[0].name][size]
        for config in CONFIGS:
            r = results[config.name][size]
            label = f"{size[0]}x{size[1]}"
            print(
                f"{label:<10} {config.name:<12} {r.step_seconds:>8.3f} {r.step_seconds / base.step_seconds:>6.2f}"
                f" {r.image_seconds:>8.3f} {r.image_seconds / base.image_seconds:>6.2f}"
            )
    print("s/step in a batch of 2 is per call (both images); s/image is the run's wall time per image.")


if __name__ == "__main__":
    main()
