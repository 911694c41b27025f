"""The local engine on one GPU, for any family's model: correctness first, then speed,
through the serving path (``LocalBackend.run``: the batch key, the engine, the family's
run, the result's encoding), for the fp8, compile and off profiles in that order.

    python benchmarks/engine_gpu.py --model flux-dev [--budget-seconds 430] [--json PATH]
    python benchmarks/engine_gpu.py --smoke          # CPU, tiny weights: checks the script

Nothing is downloaded. The model's components are built from its family's
``Model.components`` (the real configs) with random weights directly on the GPU in bf16,
seeded, with a scaled initialisation (Linear ~ N(0, 1/fan_in), adaLN modulation x0.01)
so that the activations stay finite through every block; tokenizers and the scheduler
come from the family's tiny build. Every profile rebuilds the same weights from the seed.

Order and content (each section skipped, and said so, once ``--budget-seconds`` is
spent; a SIGTERM reports what was measured):

1. the matmul ceilings: a bf16 GEMM and a row-scaled float8 GEMM with fast accumulation
   (as torchao runs it), 8192^3, beside the datasheet figures;
2. the eager bf16 reference image (few steps, seed 0) and the transformer's FLOPs per
   step at the measured size (``torch.utils.flop_counter`` on one real forward);
3. per profile (fp8, compile, off): build, place, warm up (timed: the compile cost);
   correctness against the reference (PSNR, max and mean pixel error, NaN count); then
   the timed rows, each ``--repeats`` runs after one untimed, median reported, with the
   request's wall time and the transformer's time (CUDA events), MFU against both the
   datasheet and the measured ceiling:
   - ``plain``: a request without LoRA (the LoRA slots off: the graph has no adapter);
   - ``slots-on``: the same request with the slots forced on, zero weights (what every
     request paid before; the difference is the slot tax);
   - ``lora``: a request with a rank-16 LoRA in the slots;
   - ``high``: fal's ``acceleration: high`` (First Block Cache), with the cached steps;
   - ``batch``: 512x512, four requests arriving together through the backend (one
     call of four images) against the same four one after another;
4. a real CUDA out-of-memory through the 503 path: memory filled until a request cannot
   fit, the request must end ``DeviceOutOfMemory`` with the failed call's memory freed,
   and the next request must run.

One JSON file of everything goes to ``--json`` (default ``$OUT/engine_gpu.json`` when
``OUT`` is set).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

#: dense datasheet peaks (TFLOP/s) by device name fragment: (bf16, fp8)
DATASHEET = {"H200": (989.0, 1979.0), "H100": (989.0, 1979.0), "A100": (312.0, 0.0), "L40S": (362.0, 733.0), "4090": (165.0, 330.0)}
PROFILES = ("fp8", "compile", "off")
RESULTS: dict[str, Any] = {"rows": [], "correctness": [], "warmup": [], "skipped": [], "notes": []}


class Stopped(Exception):
    """SIGTERM arrived."""


def _stopped(signum: int, frame: Any) -> None:
    raise Stopped()


def say(line: str) -> None:
    print(line, flush=True)


# -- ceilings -------------------------------------------------------------------------------------


def measured_ceiling(kind: str, device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """TFLOP/s of a square GEMM: bf16, or float8 e4m3 with row-wise scales and fast
    accumulation (torchao's float8 Linear runs exactly this)."""
    if device.type != "cuda":
        return float("nan")
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    if kind == "fp8":
        a8, b8 = a.to(torch.float8_e4m3fn), b.t().contiguous().to(torch.float8_e4m3fn).t()
        sa, sb = torch.ones(size, 1, device=device), torch.ones(1, size, device=device)

        def run() -> Any:
            return torch._scaled_mm(a8, b8, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16, use_fast_accum=True)
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
    return 2 * size**3 / (start.elapsed_time(end) / 1000 / repeats) / 1e12


# -- weights ------------------------------------------------------------------------------------


def scaled_init(module: torch.nn.Module, seed: int) -> None:
    """Deterministic weights whose activations stay finite through every block."""
    generator = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, sub in module.named_modules():
            if isinstance(sub, torch.nn.Linear):
                std = 1.0 / math.sqrt(sub.in_features)
                if "norm" in name.rsplit(".", 1)[-1] or ".norm" in name:
                    std *= 0.01  # adaLN modulation: near-identity scale and shift
                sub.weight.normal_(0.0, std, generator=generator)
                if sub.bias is not None:
                    sub.bias.zero_()
            elif isinstance(sub, torch.nn.Embedding):
                sub.weight.normal_(0.0, 1.0, generator=generator)


def build_pipeline(model_name: str, folder: Path, device: torch.device, *, smoke: bool, seed: int = 0) -> Any:
    """The model's pipeline: every component of ``Model.components`` built on ``device``
    in bf16 with seeded scaled weights (``smoke``: the tiny build's own weights), the
    tokenizers and scheduler read from the tiny build in ``folder``."""
    import diffusers

    from openfal.backends.local import families, memory_plan

    model = families.model(model_name)
    pipeline_class = getattr(diffusers, model.pipeline)
    if smoke:
        return pipeline_class.from_pretrained(folder, local_files_only=True)
    components: dict[str, Any] = {}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            for index, (name, component) in enumerate(model.components.items()):
                module = memory_plan.build_component(component).eval()
                scaled_init(module, seed + index)
                components[name] = module
    finally:
        torch.set_default_dtype(previous)
    return pipeline_class.from_pretrained(folder, local_files_only=True, **components)


# -- the request path ------------------------------------------------------------------------------


class Bench:
    """One model on one device: builds engines per profile, runs requests through a
    ``LocalBackend`` around the engine."""

    def __init__(self, args: argparse.Namespace, root: Path, device: torch.device) -> None:
        from openfal.backends.local import families

        self.args, self.root, self.device = args, root, device
        self.model = families.model(args.model)
        self.family = families.family_of_model(args.model)
        self.folder = root / "models" / args.model
        self.model.build_tiny(self.folder)
        self.endpoint = self._endpoint()
        self.lora_endpoint = self._endpoint(loras=True)
        fields = self.family.endpoint(self.endpoint).input_model.model_fields
        self.fields = set(fields)
        self.default_steps = int(fields["num_inference_steps"].default) if "num_inference_steps" in fields else None
        self.engine: Any = None
        self.backend: Any = None

    def _endpoint(self, *, loras: bool = False) -> str | None:
        """The model's first endpoint whose only required input is the prompt (with a
        ``loras`` field, for ``loras``)."""
        for endpoint in self.family.endpoints:
            fields = endpoint.input_model.model_fields
            required = [n for n, f in fields.items() if f.is_required()]
            if endpoint.models == (self.model.name,) and required == ["prompt"] and (not loras or "loras" in fields):
                return endpoint.endpoint_id
        if loras:
            return None
        raise SystemExit(f"{self.model.name}: no endpoint that takes a prompt alone")

    def body(self, width: int, height: int, *, steps: int | None, images: int = 1, seed: int = 0, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": "a lighthouse on a cliff at dawn, volumetric light", "seed": seed}
        body.update({k: v for k, v in extra.items() if k in self.fields or k == "loras"})
        if "image_size" in self.fields:
            body["image_size"] = {"width": width, "height": height}
        if "num_inference_steps" in self.fields and steps is not None:
            body["num_inference_steps"] = steps
        if "num_images" in self.fields:
            body["num_images"] = images
        if "output_format" in self.fields:
            body["output_format"] = "png"
        return body

    def start(self, profile: str, *, lora_slots: int, shapes: list[tuple[int, int, int]]) -> float:
        """A fresh engine of ``profile`` serving a freshly built pipeline, warmed for
        ``shapes``; the seconds building, placing and warming took."""
        from openfal.backends.local import LocalBackend, warmup
        from openfal.backends.local.cache import PipelineSpec
        from openfal.backends.local.engine import Engine
        from openfal.backends.local.options import LocalOptions
        from openfal.config import Settings

        started = time.perf_counter()
        settings = Settings(
            data_dir=self.root / "data", models_dir=self.root / "models", device=str(self.device), acceleration=profile,  # type: ignore[arg-type]
            max_batch_images=4, max_batch_size=4, previews=True, lora_slots=lora_slots, lora_max_rank=64,
            model_paths={self.model.name: str(self.folder)}, loras_dir=self.root / "loras", warmup_sizes=("512x512",),
        )  # fmt: skip
        options = LocalOptions(preview_interval_seconds=1.0)
        checker = _safety_checker(self.root / "safety-checker", self.device, smoke=self.args.smoke)
        memory = torch.cuda.get_device_properties(self.device).total_memory if self.device.type == "cuda" else None
        self.engine = Engine(settings, options, checker, memory_bytes=memory)
        self.backend = LocalBackend(settings, options=options, safety_checker=checker)
        self.backend._engine = self.engine
        pipe = build_pipeline(self.model.name, self.folder, self.device, smoke=self.args.smoke)
        spec = PipelineSpec(self.model.name, self.folder, self.model.pipeline)
        self.engine.adopt(spec, pipe, [warmup.Shape(self.model.name, w, h, n) for w, h, n in shapes])
        return time.perf_counter() - started

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = self.backend = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        torch._dynamo.reset()

    def pipe(self) -> Any:
        (spec,) = [s for s in self.engine.cache.loaded() if s.model == self.model.name]
        (pipe,) = self.engine.cache.get(spec)
        return pipe

    def run(self, bodies: list[dict[str, Any]], *, together: bool = True) -> tuple[float, float, list[Any]]:
        """``bodies`` as requests through the backend (``together``: one claim, as the
        worker hands requests that arrived together; else one after another); wall
        seconds, transformer seconds, the results. A body with ``loras`` goes to the
        model's LoRA endpoint."""
        from openfal.backends.base import Job
        from openfal.endpoints.catalog import CATALOG, validate_input

        jobs = []
        for i, body in enumerate(bodies):
            endpoint = self.lora_endpoint if "loras" in body and self.lora_endpoint else self.endpoint
            jobs.append(Job(request_id=f"bench-{i}", endpoint_id=endpoint, input=validate_input(CATALOG[endpoint], body), emit=self._log))
        timer = TransformerTimer(self.pipe(), self.device)
        _sync(self.device)
        started = time.perf_counter()
        if together:
            results = list(asyncio.run(self.backend.run(jobs)))
        else:
            results = [r for job in jobs for r in asyncio.run(self.backend.run([job]))]
        _sync(self.device)
        wall = time.perf_counter() - started
        denoise = timer.stop()
        return wall, denoise, results

    def _log(self, event: Any) -> None:
        message = getattr(event, "message", None)
        if message and self.args.verbose:
            say(f"    log: {message}")
        if message and message.startswith("acceleration high"):
            RESULTS.setdefault("high_logs", []).append(message)


class TransformerTimer:
    """The transformer's forward time over a request (CUDA events; wall clock on CPU)."""

    def __init__(self, pipe: Any, device: torch.device) -> None:
        self.device = device
        self.pairs: list[list[Any]] = []
        self.handles = [
            pipe.transformer.register_forward_pre_hook(lambda *a: self.pairs.append([self._now(), None])),
            pipe.transformer.register_forward_hook(lambda *a: self.pairs[-1].__setitem__(1, self._now())),
        ]

    def _now(self) -> Any:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self) -> float:
        for handle in self.handles:
            handle.remove()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return sum(a.elapsed_time(b) / 1000 for a, b in self.pairs if b is not None)
        return sum(b - a for a, b in self.pairs if b is not None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _safety_checker(folder: Path, device: torch.device, *, smoke: bool) -> Any:
    """A ViT-base classifier of Falconsai/nsfw_image_detection's config, random weights
    (the tiny one in smoke runs)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from openfal.backends.local import model_configs
    from openfal.backends.local.safety import ClassifierSafetyChecker

    if not folder.exists():
        base = dict(model_configs.VIT_BASE_NSFW)
        if smoke:
            base.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=16)
        config = ViTConfig(**base, id2label={0: "normal", 1: "nsfw"}, label2id={"normal": 0, "nsfw": 1})
        ViTForImageClassification(config).save_pretrained(folder)
        ViTImageProcessor(size={"height": config.image_size, "width": config.image_size}).save_pretrained(folder)
    return ClassifierSafetyChecker(folder, device)


def pixels_of(result: Any) -> np.ndarray | None:
    """The first image of a result (None: not an image result, or a failed run)."""
    import io

    from PIL import Image

    images = getattr(result, "payload", {}).get("images") if hasattr(result, "payload") else None
    if not images:
        say(f"  (no image in the result: {getattr(result, 'message', type(result).__name__)})")
        return None
    blob = images[0]
    return np.asarray(Image.open(io.BytesIO(blob.read())).convert("RGB"), dtype=np.float64)


def compare(image: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    error = np.abs(image - reference)
    mse = float((error**2).mean())
    return {
        "psnr_db": round(10 * math.log10(255.0**2 / mse), 2) if mse > 0 else float("inf"),
        "max_error": float(error.max()),
        "mean_error": round(float(error.mean()), 3),
    }


def transformer_flops(bench: Bench, width: int, height: int) -> float:
    """FLOPs of one transformer forward at ``width`` x ``height``, one image: its real
    inputs captured from a one-step request, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    captured: list[tuple[Any, Any]] = []
    handle = bench.pipe().transformer.register_forward_pre_hook(lambda m, a, k: captured.append((a, k)) if not captured else None, with_kwargs=True)
    try:
        bench.run([bench.body(width, height, steps=1)])
    finally:
        handle.remove()
    args, kwargs = captured[0]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        bench.pipe().transformer(*args, **kwargs)
    return float(counter.get_total_flops())


# -- the sections ------------------------------------------------------------------------------------


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def allows(self, what: str, needs: float = 0.0) -> bool:
        if self.left() > needs:
            return True
        RESULTS["skipped"].append(what)
        say(f"  skipped (time budget): {what}")
        return False


def timed_row(
    bench: Bench, profile: str, name: str, bodies: list[dict[str, Any]], repeats: int, flops_per_image_step: float, steps: int, *, together: bool = True
) -> dict[str, Any]:
    bench.run(bodies, together=together)  # untimed: allocator, cuDNN heuristics, first LoRA read
    runs = [bench.run(bodies, together=together) for _ in range(repeats)]
    wall = statistics.median(r[0] for r in runs)
    denoise = statistics.median(r[1] for r in runs)
    images = sum(int(b.get("num_images", 1)) for b in bodies)
    row: dict[str, Any] = {"profile": profile, "row": name, "images": images, "steps": steps, "wall_s": round(wall, 4), "denoise_s": round(denoise, 4)}
    if flops_per_image_step and denoise:
        rate = flops_per_image_step * images * steps / denoise / 1e12
        peak_bf16, peak_fp8 = RESULTS["datasheet"]
        ceiling = RESULTS["ceiling_fp8"] if profile == "fp8" else RESULTS["ceiling_bf16"]
        datasheet = peak_fp8 if profile == "fp8" else peak_bf16
        row.update(tflops=round(rate, 1), mfu_datasheet=round(rate / datasheet, 3) if datasheet else None, mfu_measured=round(rate / ceiling, 3) if ceiling == ceiling else None)
    RESULTS["rows"].append(row)
    say(f"  {profile:<7} {name:<22} {images} img  wall {wall:7.3f} s  denoise {denoise:7.3f} s" + (f"  {row['tflops']} TFLOP/s  MFU {row['mfu_datasheet']:.0%} datasheet / {row['mfu_measured']:.0%} measured" if "tflops" in row and row["mfu_measured"] is not None else ""))
    return row


def run_profile(bench: Bench, profile: str, reference: np.ndarray | None, flops: float, budget: Budget) -> None:
    args = bench.args
    width, height = args.width, args.height
    steps = args.steps or bench.default_steps or 28
    slots = args.lora_slots if bench.model.loras and profile != "off" else 0
    shapes = [(width, height, 1), (512, 512, 2)]
    say(f"[{profile}] building {bench.model.name}, placing and warming up (LoRA slots: {slots})")
    seconds = bench.start(profile, lora_slots=slots, shapes=shapes)
    chosen = bench.engine.acceleration.profile
    RESULTS["warmup"].append({"profile": profile, "ran_as": chosen, "seconds": round(seconds, 1), "reason": bench.engine.acceleration.reason})
    say(f"[{profile}] ready in {seconds:.1f} s (runs as {chosen}: {bench.engine.acceleration.reason})")
    if chosen != profile:
        say(f"[{profile}] skipped: this device runs it as {chosen}")
        return
    if reference is not None:
        _, _, (result,) = bench.run([bench.body(width, height, steps=args.check_steps, acceleration="regular")])
        image = pixels_of(result)
        if image is not None:
            check = {"profile": profile, **compare(image, reference), "nan": int(np.isnan(image).sum())}
            RESULTS["correctness"].append(check)
            say(f"[{profile}] correctness vs eager bf16 ({args.check_steps} steps): PSNR {check['psnr_db']} dB, max {check['max_error']}, mean {check['mean_error']}")
    main = bench.body(width, height, steps=steps, acceleration="regular")
    timed_row(bench, profile, f"plain {width}x{height}", [main], args.repeats, flops, steps)
    if slots and budget.allows(f"{profile} slots-on row"):
        from openfal.backends.local import lora_bank

        transformer = bench.pipe().transformer
        original = bench.engine.adapters.apply

        def slots_on(pipe: Any, loras: Any, say: Any) -> None:  # the old behaviour: slots live, zero weights
            original(pipe, loras, say)
            lora_bank.set_active(transformer, True)

        bench.engine.adapters.apply = slots_on
        try:
            timed_row(bench, profile, "slots-on (zero LoRA)", [main], args.repeats, flops, steps)
        finally:
            bench.engine.adapters.apply = original
        if bench.lora_endpoint and budget.allows(f"{profile} lora row"):
            _lora_file(bench, transformer)
            timed_row(bench, profile, "lora rank 16", [{**main, "loras": [{"path": "bench-lora", "scale": 1.0}]}], args.repeats, flops, steps)
    if "acceleration" in bench.fields and budget.allows(f"{profile} high row"):
        RESULTS.pop("high_logs", None)
        row = timed_row(bench, profile, "acceleration high", [{**main, "acceleration": "high"}], args.repeats, flops, steps)
        row["log"] = (RESULTS.get("high_logs") or [""])[-1]
    if profile != "off" and budget.allows(f"{profile} batch rows"):
        small = [bench.body(512, 512, steps=steps, seed=s, acceleration="regular") for s in range(4)]
        alone = timed_row(bench, profile, "512x512 x4 one by one", small, args.repeats, flops_512(bench), steps, together=False)
        together = timed_row(bench, profile, "512x512 x4 together", small, args.repeats, flops_512(bench), steps, together=True)
        ratio = alone["wall_s"] / together["wall_s"]
        RESULTS.setdefault("batch", {})[profile] = {
            "images_per_s_one_by_one": round(4 / alone["wall_s"], 3), "images_per_s_together": round(4 / together["wall_s"], 3), "ratio": round(ratio, 3),
        }  # fmt: skip
        say(f"  {profile:<7} 512x512, four requests arriving together vs one by one: {ratio:.2f}x images/s")


def flops_512(bench: Bench) -> float:
    return float(RESULTS.get("flops_512", 0.0))


def _lora_file(bench: Bench, transformer: torch.nn.Module) -> None:
    """A rank-16 LoRA in diffusers' layout on every targeted attention projection, in
    the transformer's real shapes, saved where requests name it (``bench-lora``)."""
    from safetensors.torch import save_file

    from openfal.backends.local import lora_bank

    bank = lora_bank.bank_of(transformer)
    generator = torch.Generator().manual_seed(7)
    state = {}
    for path in (bank.ranks if bank is not None else {}):
        base = getattr(transformer.get_submodule(path), "base_layer", None)
        if base is None or not path.endswith(("attn.to_out.0", "attn.to_qkv")):
            continue
        state[f"transformer.{path}.lora_A.weight"] = (torch.randn(16, base.in_features, generator=generator) * 0.01).to(torch.bfloat16)
        state[f"transformer.{path}.lora_B.weight"] = (torch.randn(base.out_features, 16, generator=generator) * 0.01).to(torch.bfloat16)
    folder = bench.root / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "bench-lora.safetensors"))


def oom_check(bench: Bench) -> None:
    """A real CUDA OOM through the 503 path: fill the device until a 1024x1024 request
    of four images cannot fit; it must end DeviceOutOfMemory with its memory freed, and
    the next request (after the filler goes) must run. CPU: an OOM raised in the
    transformer stands in."""
    from openfal.backends.base import Output
    from openfal.errors import RunError

    report: dict[str, Any] = {}
    filler: list[torch.Tensor] = []
    handle = None
    if bench.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info()
        keep = 512 * 2**20
        while free > keep + 256 * 2**20:
            try:
                filler.append(torch.empty(min(free - keep, 4 * 2**30), dtype=torch.uint8, device=bench.device))
            except torch.OutOfMemoryError:
                break
            free, _ = torch.cuda.mem_get_info()
        report["free_before_gib"] = round(free / 2**30, 2)
        report["allocated_before_gib"] = round(torch.cuda.memory_allocated() / 2**30, 3)
    else:

        def boom(*a: Any) -> None:
            raise torch.OutOfMemoryError("CUDA out of memory (raised by the benchmark on CPU)")

        handle = bench.pipe().transformer.register_forward_pre_hook(boom)
    try:
        _, _, (failed,) = bench.run([bench.body(1024, 1024, steps=2, images=4)])
    finally:
        if handle is not None:
            handle.remove()
    report["status"] = getattr(failed, "status_code", None) if isinstance(failed, RunError) else "completed"
    report["message"] = getattr(failed, "message", "")[:200]
    if bench.device.type == "cuda":
        report["free_after_gib"] = round(torch.cuda.mem_get_info()[0] / 2**30, 2)
        # the 503 is still referenced by ``failed``: the failed call's tensors must be gone anyway
        report["allocated_after_gib"] = round(torch.cuda.memory_allocated() / 2**30, 3)
        report["freed"] = report["allocated_after_gib"] <= report["allocated_before_gib"] + 0.01
    filler.clear()
    _, _, (after,) = bench.run([bench.body(512, 512, steps=2)])
    report["next_request"] = "completed" if isinstance(after, Output) else f"failed: {getattr(after, 'message', after)}"
    RESULTS["oom"] = report
    say(f"[oom] request under a full device: {report['status']} ({report['message'][:80]}); next request {report['next_request']}")


def goals() -> dict[str, str]:
    """The issue's goals, as this run measured them."""
    rows = {(r["profile"], r["row"]): r for r in RESULTS["rows"]}
    out: dict[str, str] = {}
    size = f"{RESULTS['width']}x{RESULTS['height']}"
    fp8 = rows.get(("fp8", f"plain {size}"))
    if fp8:
        out["fp8 regular denoise <= 1.9 s"] = f"{fp8['denoise_s']:.2f} s ({'met' if fp8['denoise_s'] <= 1.9 else 'missed'})"
        on = rows.get(("fp8", "slots-on (zero LoRA)"))
        if on:
            out["slot tax measured (slots on vs off)"] = f"{on['denoise_s'] / fp8['denoise_s'] - 1:+.1%}"
    high = rows.get(("fp8", "acceleration high"))
    if high:
        out["fp8 high denoise <= 1.2 s"] = f"{high['denoise_s']:.2f} s ({'met' if high['denoise_s'] <= 1.2 else 'missed'})"
    comp = rows.get(("compile", f"plain {size}"))
    if comp and comp.get("mfu_datasheet") is not None and not math.isnan(comp["mfu_datasheet"]):
        out["bf16 compile MFU >= 55% of datasheet"] = f"{comp['mfu_datasheet']:.0%} ({'met' if comp['mfu_datasheet'] >= 0.55 else 'missed'})"
    for profile, batch in RESULTS.get("batch", {}).items():
        out[f"batch 4 at 512x512 >= 1.6x batch 1 ({profile})"] = f"{batch['ratio']:.2f}x ({'met' if batch['ratio'] >= 1.6 else 'missed'})"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="flux-dev", help="any family model (openfal models list)")
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--steps", type=int, default=None, help="timed rows' steps (default: the endpoint's)")
    parser.add_argument("--check-steps", type=int, default=4, help="steps of the correctness images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lora-slots", type=int, default=1)
    parser.add_argument("--budget-seconds", type=float, default=float("inf"))
    parser.add_argument("--no-oom", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="CPU, the tiny weights: checks the script, measures nothing")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    args.width, args.height = (int(v) for v in args.size.split("x"))
    if args.json is None and os.environ.get("OUT"):
        args.json = str(Path(os.environ["OUT"]) / "engine_gpu.json")
    if args.smoke:
        args.width, args.height, args.steps = 64, 48, 2
        args.check_steps = 2
    elif not torch.cuda.is_available():
        say("CUDA is not available: this benchmark needs an NVIDIA GPU (try --smoke)")
        return 0
    device = torch.device("cpu") if args.smoke else torch.device("cuda")
    budget = Budget(args.budget_seconds)
    began = time.perf_counter()
    signal.signal(signal.SIGTERM, _stopped)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke run)"
    RESULTS.update(command=" ".join(["python", *sys.argv]), device=name, torch=torch.__version__, model=args.model, width=args.width, height=args.height)
    RESULTS["datasheet"] = next((v for k, v in DATASHEET.items() if k in name), (float("nan"), float("nan")))
    RESULTS["ceiling_bf16"] = measured_ceiling("bf16", device)
    fp8_ok = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
    try:
        RESULTS["ceiling_fp8"] = measured_ceiling("fp8", device) if fp8_ok else float("nan")
    except RuntimeError as exc:
        RESULTS["notes"].append(f"fp8 GEMM ceiling not measurable: {exc}")
        RESULTS["ceiling_fp8"] = float("nan")
    say(f"device {name}; torch {torch.__version__}; GEMM ceiling bf16 {RESULTS['ceiling_bf16']:.0f}, fp8 {RESULTS['ceiling_fp8']:.0f} TFLOP/s; datasheet {RESULTS['datasheet']}")
    with tempfile.TemporaryDirectory(prefix="openfal-bench-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench = Bench(args, Path(tmp), device)
        say(f"model {args.model} via {bench.endpoint}")
        try:
            reference, flops = None, 0.0
            bench.start("off", lora_slots=0, shapes=[])
            _, _, (ref,) = bench.run([bench.body(args.width, args.height, steps=args.check_steps, acceleration="regular")])
            reference = pixels_of(ref)
            RESULTS["reference_nan"] = int(np.isnan(reference).sum()) if reference is not None else None
            flops = transformer_flops(bench, args.width, args.height)
            RESULTS["flops_512"] = transformer_flops(bench, 512, 512)
            RESULTS["tflop_per_step_per_image"] = round(flops / 1e12, 2)
            say(f"reference ready; transformer {flops / 1e12:.2f} TFLOP per step at {args.width}x{args.height}")
            bench.stop()
            profiles = args.profiles.split(",")
            for profile in [p for p in PROFILES if p in profiles]:
                if not budget.allows(f"profile {profile}", 45 if profile == "off" else 90):
                    continue
                try:
                    run_profile(bench, profile, reference, flops, budget)
                    if profile == "off" and not args.no_oom and budget.allows("oom check", 10):
                        oom_check(bench)
                except Stopped:
                    raise
                except Exception as exc:  # a profile that cannot run here is reported, not fatal
                    RESULTS["notes"].append(f"{profile} failed: {type(exc).__name__}: {exc}")
                    say(f"[{profile}] failed: {type(exc).__name__}: {exc}")
                bench.stop()
        except Stopped:
            say("stopped by SIGTERM: reporting what was measured")
            RESULTS["notes"].append("stopped by SIGTERM")
    RESULTS["goals"] = goals()
    RESULTS["seconds"] = round(time.perf_counter() - began, 1)
    say(f"\nresults ({RESULTS['seconds']} s):")
    for goal, verdict in RESULTS["goals"].items():
        say(f"  goal {goal}: {verdict}")
    if args.smoke:
        say("smoke run: tiny weights on CPU; the figures (goals included) check the script and measure nothing")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(RESULTS, indent=1, default=str))
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
