"""The serving path on one GPU, per acceleration profile: what a request costs in the
server, measured through the same ``Engine`` the local backend runs (its step
callbacks, previews, safety check, memory plan, acceleration and warm-up), plus the
JPEG encoding of the result.

Cases (FLUX.1-dev 28 steps and FLUX.1-schnell 4 steps):

  dev      1024x768  x1      dev      1024x1024 x1
  schnell  1024x768  x1      schnell  1024x1024 x1
  dev      512x512   x1      dev      512x512   x4   (one request, num_images=4)

Per profile, a LoRA row on the first case (``fal-ai/flux-lora``, rank-16 LoRAs read
from local files): the first use of a LoRA, a swap to another, and the steady state,
each as a ratio to the same request without a LoRA.

Profiles: ``off`` (plain diffusers bf16, the baseline), ``compile`` and ``fp8`` (see
src/openfal/backends/local/acceleration.py). Per case it prints the request's seconds
(engine + encoding), the denoising seconds (the transformer's forwards, timed with
CUDA events), model FLOPs utilisation of the denoising against the **measured** matmul
ceiling of this GPU (a bf16 GEMM, and for fp8 a rowwise-scaled float8 GEMM; the
datasheet figure is shown beside it), peak memory, images/s, and the speed-up against
``off`` in the same run.

Nothing is downloaded: the transformer (the real FLUX.1 config, 11.9 B parameters),
T5-XXL, CLIP-L and the VAE are built with random weights directly on the GPU, and the
safety checker is a random ViT-base of Falconsai/nsfw_image_detection's config. Timing
does not depend on the weights' values. FLOPs per step: flux-inference.md section 3.3.

``--smoke`` runs the same code on CPU with the tiny model set (to check the script; its
numbers mean nothing). ``--budget-seconds`` skips what would run past it.

    .venv/bin/python benchmarks/flux_gpu.py [--profiles off,compile,fp8] [--repeats 2] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from openfal.backends.local import model_configs  # noqa: E402
from openfal.backends.local.families import flux1  # noqa: E402

#: dense peaks (TFLOP/s) by device name fragment: (bf16, fp8); shown beside the measured ceiling
DATASHEET = {"H200": (989.0, 1979.0), "H100": (989.0, 1979.0), "A100": (312.0, 0.0), "L40S": (362.0, 733.0), "4090": (165.0, 330.0)}
#: flux-inference.md section 3.3 (512 text tokens)
KNOWN_TFLOP_PER_STEP = {(1024, 1024): 74.4, (1024, 768): 55.3}
TEXT_TOKENS = {"flux-dev": 512, "flux-schnell": 256}
STEPS = {"flux-dev": 28, "flux-schnell": 4}
ENDPOINT = {"flux-dev": "fal-ai/flux-1/dev", "flux-schnell": "fal-ai/flux-1/schnell"}
T5_XXL = model_configs.T5_XXL_ENCODER
CLIP_L = model_configs.CLIP_L_TEXT
VAE = flux1.FLUX_VAE
FLUX_DEV = flux1.FLUX_TRANSFORMER


@dataclass(frozen=True)
class Case:
    model: str
    width: int
    height: int
    images: int


#: in the order the goals need them, should the time budget cut a profile short
CASES = [
    Case("flux-dev", 1024, 768, 1), Case("flux-dev", 512, 512, 1), Case("flux-dev", 512, 512, 4),
    Case("flux-dev", 1024, 1024, 1), Case("flux-schnell", 1024, 768, 1), Case("flux-schnell", 1024, 1024, 1),
]  # fmt: skip
SMOKE_CASES = [Case("flux-dev", 64, 48, 1), Case("flux-dev", 32, 32, 1), Case("flux-dev", 32, 32, 4), Case("flux-schnell", 64, 48, 1)]


@dataclass
class Row:
    profile: str
    case: Case
    steps: int
    request_s: float
    denoise_s: float
    peak_gib: float
    ceiling: float
    note: str = ""


def tflop_per_step(width: int, height: int, text_tokens: int) -> float:
    """FLUX.1 transformer FLOPs per step per image: 57 blocks x (linear 2*N*113.25M + attention 4*N^2*3072)."""
    if text_tokens == 512 and (width, height) in KNOWN_TFLOP_PER_STEP:
        return KNOWN_TFLOP_PER_STEP[(width, height)]
    n = (width // 16) * (height // 16) + text_tokens
    return 57 * (2 * n * 113_246_208 + 4 * n * n * 3072) / 1e12


# -- the matmul ceiling -------------------------------------------------------------------------


def measured_ceiling(dtype: str, device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """TFLOP/s of a square GEMM on this GPU (bf16, or float8 e4m3 with rowwise scales)."""
    if device.type != "cuda":
        return float("nan")
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    if dtype == "fp8":
        a8, b8 = a.to(torch.float8_e4m3fn), b.t().contiguous().t().to(torch.float8_e4m3fn)
        sa = torch.ones(size, 1, device=device)
        sb = torch.ones(1, size, device=device)

        def run() -> Any:
            return torch._scaled_mm(a8, b8, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
    else:

        def run() -> Any:
            return a @ b

    for _ in range(3):
        run()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        run()
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / repeats
    return 2 * size**3 / seconds / 1e12


# -- building the full-size pipelines -----------------------------------------------------------


class _default:
    """Allocate new tensors on ``device`` in ``dtype`` (no 48 GB fp32 detour on the host)."""

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype

    def __enter__(self) -> None:
        self.previous = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        self.context = torch.device(self.device)
        self.context.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.context.__exit__(*exc)
        torch.set_default_dtype(self.previous)


def build_pipelines(device: torch.device) -> dict[str, Any]:
    """FLUX.1-dev and -schnell FluxPipelines of random weights, sharing T5, CLIP and the
    VAE as the real repositories do."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from openfal.backends.local import tiny

    with torch.no_grad(), _default(device, torch.bfloat16):
        shared = {
            "text_encoder": CLIPTextModel(CLIPTextConfig(**CLIP_L)).eval(),
            "text_encoder_2": T5EncoderModel(T5Config(**T5_XXL)).eval(),
            "vae": AutoencoderKL(**VAE).eval(),
            "tokenizer": tiny.clip_tokenizer(),
            "tokenizer_2": tiny.t5_tokenizer(),
        }
        pipes = {}
        for model, guidance in (("flux-dev", True), ("flux-schnell", False)):
            scheduler = FlowMatchEulerDiscreteScheduler(
                shift=3.0, use_dynamic_shifting=guidance, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
            )
            transformer = FluxTransformer2DModel(**{**FLUX_DEV, "guidance_embeds": guidance}).eval()
            pipes[model] = FluxPipeline(scheduler=scheduler, transformer=transformer, **shared)
    return pipes


def random_safety_checker(folder: Path, device: torch.device) -> Any:
    """A ViT-base classifier of Falconsai/nsfw_image_detection's config, random weights."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from openfal.backends.local.safety import ClassifierSafetyChecker

    config = ViTConfig(**model_configs.VIT_BASE_NSFW, id2label={0: "normal", 1: "nsfw"}, label2id={"normal": 0, "nsfw": 1})
    ViTForImageClassification(config).save_pretrained(folder)
    side = config.image_size
    ViTImageProcessor(size={"height": side, "width": side}).save_pretrained(folder)
    return ClassifierSafetyChecker(folder, device)


# -- one profile --------------------------------------------------------------------------------


def make_engine(profile: str, args: argparse.Namespace, root: Path, device: torch.device) -> Any:
    from openfal.backends.local.engine import Engine
    from openfal.backends.local.options import LocalOptions
    from openfal.backends.local.safety import load_safety_checker
    from openfal.config import Settings

    settings = Settings(
        data_dir=root, models_dir=root / "models", demo=args.smoke, device=str(device), acceleration=profile,  # type: ignore[arg-type]
        max_batch_images=4, previews=True, lora_slots=args.lora_slots, model_paths={m: str(root / "folders" / m) for m in STEPS} if not args.smoke else {},
    )  # fmt: skip
    if args.smoke:
        from openfal.backends.local.tiny import build_tiny_models

        checker = load_safety_checker(build_tiny_models(settings.effective_models_dir, ("safety-checker",))["safety-checker"], device)
        return Engine(settings, LocalOptions(preview_interval_seconds=1.0), checker)
    checker = random_safety_checker(root / "safety-checker", device)
    total = torch.cuda.get_device_properties(device).total_memory
    return Engine(settings, LocalOptions(preview_interval_seconds=1.0), checker, memory_bytes=total)


class Stopped(Exception):
    """SIGTERM arrived."""


def _stopped(signum: int, frame: Any) -> None:
    raise Stopped()


def serve_profile(
    profile: str, cases: list[Case], args: argparse.Namespace, root: Path, device: torch.device, deadline: float, done: list[Row]
) -> list[Row]:
    """Rows measured for ``profile``; each is also appended to ``done`` as it is measured
    (so a SIGTERM mid-profile still reports them)."""
    from openfal.backends.local import warmup
    from openfal.backends.local.cache import PipelineSpec

    engine = make_engine(profile, args, root, device)
    chosen = engine.acceleration
    print(f"[{profile}] acceleration {chosen.profile}: {chosen.reason}", flush=True)
    if profile != "off" and chosen.profile != profile:
        print(f"[{profile}] skipped: it would run as {chosen.profile}", flush=True)
        engine.close()
        return []
    started = time.perf_counter()
    if args.smoke:  # the tiny set, loaded from disk like real weights
        for model in sorted({c.model for c in cases}):
            spec = PipelineSpec(model, engine.folder(model), "FluxPipeline")
            with engine.lock:
                (pipe,) = engine.cache.get(spec)
                engine._warm_model(model, pipe, [], [warmup.Shape(c.model, c.width, c.height, c.images) for c in cases if c.model == model])
    else:
        for model, pipe in build_pipelines(device).items():
            folder = root / "folders" / model
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
            shapes = [warmup.Shape(c.model, c.width, c.height, c.images) for c in cases if c.model == model]
            engine.adopt(PipelineSpec(model, folder, "FluxPipeline"), pipe, shapes)
    print(f"[{profile}] built, placed and warmed in {time.perf_counter() - started:.1f} s; plans {engine.status().get('plans')}", flush=True)
    ceiling = args.fp8_ceiling if chosen.profile == "fp8" else args.bf16_ceiling
    for case in cases:
        if time.perf_counter() > deadline:
            print(f"[{profile}] {case}: skipped (time budget)", flush=True)
            continue
        r = run_case(engine, profile, case, args, device, ceiling)
        done.append(r)
        print(f"[{profile}] {case.model} {case.width}x{case.height} x{case.images}: {r.request_s:.3f} s request, {r.denoise_s:.3f} s denoise", flush=True)
    plain = next((r for r in done if r.profile == profile and r.case == cases[0]), None)
    if plain is not None and time.perf_counter() < deadline:
        LORA_ROWS.append(run_lora(engine, profile, cases[0], args, device, root, plain))
    engine.close()
    return []


@dataclass
class LoraRow:
    profile: str
    case: Case
    #: the first request with a LoRA (file read, converted, loaded; the download excluded)
    first_s: float
    #: a request with another, already-read LoRA right after the first (the swap)
    swap_s: float
    #: a request with a LoRA that was also the previous request's (steady state)
    steady_s: float
    #: the same request without a LoRA, from this profile's rows
    plain_s: float


LORA_ROWS: list[LoraRow] = []


def _lora_file(path: Path, transformer: torch.nn.Module, rank: int, seed: int) -> Any:
    """A random LoRA in diffusers' layout on every attention projection (what trainers
    target), in the transformer's real shapes."""
    import hashlib

    from safetensors.torch import save_file

    from openfal.backends.local.lora_files import LoraFile

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        base = getattr(module, "base_layer", module)
        if isinstance(base, torch.nn.Linear) and name.endswith(("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0")):
            state[f"transformer.{name}.lora_A.weight"] = (torch.randn(rank, base.in_features, generator=generator) * 0.01).to(torch.bfloat16)
            state[f"transformer.{name}.lora_B.weight"] = (torch.randn(base.out_features, rank, generator=generator) * 0.01).to(torch.bfloat16)
    if not state:  # a fused engine: the unfused names are gone; target the fused projections' twins by shape
        for name, module in transformer.named_modules():
            base = getattr(module, "base_layer", module)
            if isinstance(base, torch.nn.Linear) and name.endswith(("attn.to_qkv", "attn.to_out.0")):
                state[f"transformer.{name}.lora_A.weight"] = (torch.randn(rank, base.in_features, generator=generator) * 0.01).to(torch.bfloat16)
                state[f"transformer.{name}.lora_B.weight"] = (torch.randn(base.out_features, rank, generator=generator) * 0.01).to(torch.bfloat16)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return LoraFile(digest=hashlib.sha256(path.read_bytes()).hexdigest(), file=path, scale=1.0, source=path.name)


def run_lora(engine: Any, profile: str, case: Case, args: argparse.Namespace, device: torch.device, root: Path, plain: Row) -> LoraRow:
    """A LoRA row for ``case``: first use, a swap, the steady state, through the same
    serving path as the plain rows (``Engine.generate_images`` + encoding)."""
    from dataclasses import replace

    from openfal.backends.base import Job
    from openfal.backends.local.families import images
    from openfal.backends.local.families.flux1 import FAMILY as FLUX1
    from openfal.endpoints.catalog import CATALOG, validate_input

    (spec,) = [s for s in engine.cache.loaded() if s.model == case.model]
    (pipe,) = engine.cache.get(spec)
    loras = [_lora_file(root / "loras" / f"{n}.safetensors", pipe.transformer, 16, seed) for seed, n in enumerate("ab")]
    endpoint = "fal-ai/flux-lora"
    steps = 2 if args.smoke else STEPS[case.model]
    body = {
        "prompt": "a lighthouse on a cliff at dawn", "image_size": {"width": case.width, "height": case.height},
        "num_inference_steps": steps, "num_images": case.images, "seed": 0, "enable_safety_checker": True,
    }  # fmt: skip

    def request(lora: Any) -> float:
        job = Job(request_id="bench-lora", endpoint_id=endpoint, input=validate_input(CATALOG[endpoint], body), emit=lambda event: None)
        item = images.ImageItem.of(job)
        plan = FLUX1.plan(endpoint, job.input, engine.options)
        call = replace(asyncio.run(FLUX1.prepare(plan, job.input, engine.settings, engine.options, None)), loras=(lora,))
        _sync(device)
        started = time.perf_counter()
        batch = engine.generate_images(call, [item])
        images.make_output(item, batch.images[0], batch.flags[0], batch.seconds, report_prompt=True)
        _sync(device)
        return time.perf_counter() - started

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = request(loras[0])
        request(loras[1])  # b read and loaded once
        request(loras[0])
        swap = request(loras[1])
        steady = statistics.median(request(loras[1]) for _ in range(max(1, args.repeats)))
    row = LoraRow(profile, case, first, swap, steady, plain.request_s)
    print(f"[{profile}] LoRA {case.model} {case.width}x{case.height}: first use {first:.3f} s, swap {swap:.3f} s, steady {steady:.3f} s, without {plain.request_s:.3f} s", flush=True)
    return row


def run_case(engine: Any, profile: str, case: Case, args: argparse.Namespace, device: torch.device, ceiling: float) -> Row:
    from openfal.backends.base import Job
    from openfal.backends.local.families import images
    from openfal.backends.local.families.flux1 import FAMILY as FLUX1
    from openfal.endpoints.catalog import CATALOG, validate_input

    steps = 2 if args.smoke else STEPS[case.model]
    endpoint = ENDPOINT[case.model]
    body = {
        "prompt": "a lighthouse on a cliff at dawn", "image_size": {"width": case.width, "height": case.height},
        "num_inference_steps": steps, "num_images": case.images, "seed": 0, "enable_safety_checker": True,
    }  # fmt: skip
    timer = _TransformerTimer(engine, case.model, device)

    def request() -> tuple[float, float]:
        job = Job(request_id="bench", endpoint_id=endpoint, input=validate_input(CATALOG[endpoint], body), emit=lambda event: None)
        item = images.ImageItem.of(job)
        plan = FLUX1.plan(endpoint, job.input, engine.options)
        call = asyncio.run(FLUX1.prepare(plan, job.input, engine.settings, engine.options, None))
        timer.reset()
        _sync(device)
        started = time.perf_counter()
        batch = engine.generate_images(call, [item])
        images.make_output(item, batch.images[0], batch.flags[0], batch.seconds, report_prompt=True)  # JPEG encoding
        _sync(device)
        return time.perf_counter() - started, timer.seconds()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights may decode to NaN pixels
        request()  # the first run of a shape (allocator, cuDNN heuristics; compiled: already warm)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        runs = [request() for _ in range(args.repeats)]
    timer.remove()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return Row(profile, case, steps, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), peak, ceiling)


class _TransformerTimer:
    """The transformer's forward time, summed over a request (CUDA events on GPU)."""

    def __init__(self, engine: Any, model: str, device: torch.device) -> None:
        (spec,) = [s for s in engine.cache.loaded() if s.model == model]
        (pipe,) = engine.cache.get(spec)
        self.device = device
        self.pairs: list[tuple[Any, Any]] = []
        self.handles = [
            pipe.transformer.register_forward_pre_hook(lambda *a: self._start()),
            pipe.transformer.register_forward_hook(lambda *a: self._end()),
        ]

    def _start(self) -> None:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.pairs.append((event, None))
        else:
            self.pairs.append((time.perf_counter(), None))

    def _end(self) -> None:
        begin, _ = self.pairs[-1]
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.pairs[-1] = (begin, event)
        else:
            self.pairs[-1] = (begin, time.perf_counter())

    def reset(self) -> None:
        self.pairs = []

    def seconds(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return sum(a.elapsed_time(b) / 1000 for a, b in self.pairs if b is not None)
        return sum(b - a for a, b in self.pairs if b is not None)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- report ---------------------------------------------------------------------------------------


def report(rows: list[Row], *, smoke: bool, device_name: str, args: argparse.Namespace) -> None:
    if not rows:
        print("nothing ran")
        return
    base = {(r.case.model, r.case.width, r.case.height, r.case.images): r for r in rows if r.profile == "off"}
    header = f"{'profile':<8} {'model':<13} {'size':<10} {'imgs':>4} {'steps':>5} {'request s':>9} {'denoise s':>9} {'s/step':>7} {'TFLOP/st':>8} {'MFU':>5} {'img/s':>6} {'peak GiB':>8} {'x off':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        c = r.case
        tflop = tflop_per_step(c.width, c.height, TEXT_TOKENS[c.model]) * c.images
        per_step = r.denoise_s / r.steps if r.denoise_s else float("nan")
        mfu = "n/a" if smoke or not r.denoise_s else f"{tflop / per_step / r.ceiling:.0%}"
        ref = base.get((c.model, c.width, c.height, c.images))
        speedup = f"{ref.request_s / r.request_s:.2f}" if ref else "-"
        print(
            f"{r.profile:<8} {c.model:<13} {f'{c.width}x{c.height}':<10} {c.images:>4} {r.steps:>5} {r.request_s:>9.3f} {r.denoise_s:>9.3f}"
            f" {per_step:>7.4f} {tflop:>8.1f} {mfu:>5} {c.images / r.request_s:>6.2f} {r.peak_gib:>8.1f} {speedup:>6}"
        )
    print(
        f"request s: Engine.generate_images + JPEG encoding (text encoding, denoising, VAE decode, safety check, previews); "
        f"denoise s: the transformer's forwards; MFU: TFLOP/step of FLUX.1 at that size / (denoise s / steps) / measured "
        f"ceiling (bf16 {args.bf16_ceiling:.0f} TFLOP/s, fp8 {args.fp8_ceiling:.0f} TFLOP/s on {device_name}; datasheet "
        f"{DATASHEET.get(next((k for k in DATASHEET if k in device_name), ''), ('?', '?'))}); x off: request-time speed-up over off."
    )
    if LORA_ROWS:
        print(f"\n{'profile':<8} {'LoRA row':<22} {'first use s':>11} {'swap s':>8} {'steady s':>9} {'without s':>9} {'first x':>8} {'swap x':>7} {'steady x':>8}")
        for lr in LORA_ROWS:
            c = lr.case
            print(
                f"{lr.profile:<8} {f'{c.model} {c.width}x{c.height}':<22} {lr.first_s:>11.3f} {lr.swap_s:>8.3f} {lr.steady_s:>9.3f} {lr.plain_s:>9.3f}"
                f" {lr.first_s / lr.plain_s:>8.2f} {lr.swap_s / lr.plain_s:>7.2f} {lr.steady_s / lr.plain_s:>8.2f}"
            )
        print("LoRA rows: rank-16 LoRAs on every attention projection, read from local files (download excluded); x: request time / the same request without a LoRA")
    if smoke:
        print("smoke run: tiny models on CPU; the figures check the script, they measure nothing")
    goals(rows)


def goals(rows: list[Row]) -> None:
    """The issue's goals, checked against this run (GPU only)."""
    by = {(r.profile, r.case.model, r.case.width, r.case.height, r.case.images): r for r in rows}
    fp8 = by.get(("fp8", "flux-dev", 1024, 768, 1))
    if fp8:
        print(f"goal dev 1024x768 28 steps <= 1.2 s denoising with fp8: {fp8.denoise_s:.2f} s ({'met' if fp8.denoise_s <= 1.2 else 'not met'})")
    comp = by.get(("compile", "flux-dev", 1024, 1024, 1))
    if comp and comp.denoise_s:
        mfu = 74.4 / (comp.denoise_s / comp.steps) / comp.ceiling
        print(f"goal bf16 compile >= 60% MFU (dev 1024x1024): {mfu:.0%} ({'met' if mfu >= 0.6 else 'not met'})")
    for profile in ("off", "compile", "fp8"):
        one, four = by.get((profile, "flux-dev", 512, 512, 1)), by.get((profile, "flux-dev", 512, 512, 4))
        if one and four:
            ratio = (4 / four.request_s) / (1 / one.request_s)
            print(f"goal batch 4 at 512x512 >= 2x images/s of batch 1 ({profile}): {ratio:.2f}x ({'met' if ratio >= 2 else 'not met'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", default="off,compile,fp8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny models on CPU: checks the script, not the GPU")
    parser.add_argument("--budget-seconds", type=float, default=float("inf"), help="skip cases that would start after this")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument(
        "--lora-slots", type=int, default=1, help="LoRA slots a compiled FLUX.1-dev reserves (the server's default, 1; 0: none)"
    )
    args = parser.parse_args()
    print("command:", " ".join([".venv/bin/python", *sys.argv]), flush=True)
    if not torch.cuda.is_available() and not args.smoke:
        print("CUDA is not available: this benchmark needs an NVIDIA GPU; nothing measured (try --smoke).")
        return 0
    began = time.perf_counter()
    deadline = began + args.budget_seconds
    device = torch.device("cpu") if args.smoke else torch.device("cuda")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke run)"
    args.bf16_ceiling = measured_ceiling("bf16", device)
    supports_fp8 = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
    try:
        args.fp8_ceiling = measured_ceiling("fp8", device) if supports_fp8 else float("nan")
    except RuntimeError as exc:  # no rowwise-scaled float8 GEMM in this torch/driver
        print(f"fp8 GEMM ceiling not measurable here ({exc}); fp8 MFU uses 2x the bf16 ceiling")
        args.fp8_ceiling = 2 * args.bf16_ceiling
    print(f"LoRA slots on compiled FLUX.1-dev: {args.lora_slots} (OPENFAL_LORA_SLOTS; they add adapter GEMMs to every Linear)")
    print(f"device: {name}; torch {torch.__version__}; measured GEMM ceiling bf16 {args.bf16_ceiling:.0f} / fp8 {args.fp8_ceiling:.0f} TFLOP/s", flush=True)
    cases = SMOKE_CASES if args.smoke else CASES
    rows: list[Row] = []
    signal.signal(signal.SIGTERM, _stopped)  # `timeout` in gpu_check.sh: print what was measured
    with tempfile.TemporaryDirectory(prefix="openfal-bench-") as tmp:
        for profile in args.profiles.split(","):
            if time.perf_counter() > deadline:
                print(f"[{profile}] skipped (time budget)")
                continue
            try:
                rows += serve_profile(profile, cases, args, Path(tmp) / profile, device, deadline, rows)
            except Stopped:
                print(f"[{profile}] stopped by SIGTERM; reporting what was measured", flush=True)
                break
            except Exception as exc:  # a profile that cannot run here is reported, not fatal
                print(f"[{profile}] failed: {type(exc).__name__}: {exc}", flush=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            torch._dynamo.reset()
    print(f"\nFLUX serving path, {args.repeats} timed runs per case (median), total {time.perf_counter() - began:.0f} s")
    report(rows, smoke=args.smoke, device_name=name, args=args)
    if args.json:
        Path(args.json).write_text(json.dumps([{**r.__dict__, "case": r.case.__dict__} for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
