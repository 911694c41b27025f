"""FLUX.1 [dev] at full size on one CUDA GPU: seconds per denoising step and per image
at 1024x768 and 1024x1024, for

  bf16          plain diffusers in bfloat16                                  <- baseline
  compile       bf16 + torch.compile of the repeated transformer blocks (regional)
  fp8           torchao float8 dynamic activations + weights, + the same compile
                (skipped with a message when torchao is not importable)

with each figure as a ratio to the baseline at the same size, and the model FLOPs
utilisation of a step against an H100's dense BF16 peak (989 TFLOP/s; fp8 runs are
also compared to it, so their MFU may exceed what bf16 could reach). FLOPs per step:
74.4 TFLOP at 1024x1024 and 55.3 at 1024x768 with 512 text tokens (flux-inference.md
section 3.3; the same formula for any other size).

Nothing is downloaded: the transformer (FLUX.1-dev's config, 11.9 B parameters), T5-XXL,
CLIP-L and the VAE are built with random weights directly on the GPU in bf16, and the
tokenizers are the tiny set's in-code ones. Timing does not depend on the weights'
values. Per step: the transformer's forward alone, timed with CUDA events. Per image:
a whole ``FluxPipeline`` call (text encoding, N steps, VAE decode, PIL conversion).

Without CUDA it prints why and exits 0. ``--smoke`` runs the same code on CPU with the
tiny configs (to check the script itself; its numbers mean nothing).

    .venv/bin/python benchmarks/flux_gpu.py [--steps 28] [--repeats 3] [--modes bf16,compile,fp8] [--sizes 1024x768,1024x1024]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from sizes import parse_sizes  # noqa: E402

H100_BF16_PEAK_TFLOPS = 989.0
#: dense BF16 peaks (TFLOP/s) by device name fragment; others fall back to the H100's
#: (pass --peak-tflops to set it)
BF16_PEAKS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "4090": 165.0}


def peak_for(device_name: str) -> float:
    return next((peak for fragment, peak in BF16_PEAKS.items() if fragment in device_name), H100_BF16_PEAK_TFLOPS)
#: flux-inference.md section 3.3 (512 text tokens)
KNOWN_TFLOP_PER_STEP = {(1024, 1024): 74.4, (1024, 768): 55.3}
TEXT_TOKENS = 512

FLUX_DEV = {  # black-forest-labs/FLUX.1-dev transformer/config.json
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}  # fmt: skip
T5_XXL = {  # google/t5-v1_1-xxl encoder, as FLUX's text_encoder_2
    "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
    "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32, "pad_token_id": 0, "eos_token_id": 1,
}  # fmt: skip
CLIP_L = {  # openai/clip-vit-large-patch14 text tower, as FLUX's text_encoder
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "max_position_embeddings": 77, "projection_dim": 768, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
}  # fmt: skip
VAE = {  # FLUX.1-dev vae/config.json
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4, "layers_per_block": 2,
    "norm_num_groups": 32, "sample_size": 1024, "use_quant_conv": False, "use_post_quant_conv": False,
    "shift_factor": 0.1159, "scaling_factor": 0.3611,
}  # fmt: skip


def tflop_per_step(width: int, height: int, text_tokens: int = TEXT_TOKENS) -> float:
    """FLUX.1 transformer FLOPs per step: 57 blocks x (linear 2*N*113.25M + attention 4*N^2*3072)."""
    if text_tokens == TEXT_TOKENS and (width, height) in KNOWN_TFLOP_PER_STEP:
        return KNOWN_TFLOP_PER_STEP[(width, height)]
    n = (width // 16) * (height // 16) + text_tokens
    return 57 * (2 * n * 113_246_208 + 4 * n * n * 3072) / 1e12


@dataclass(frozen=True)
class Result:
    step_seconds: float
    image_seconds: float


# -- building -----------------------------------------------------------------------------


def build_components(device: torch.device, dtype: torch.dtype, smoke: bool) -> dict[str, Any]:
    """Every FluxPipeline component, random weights allocated on ``device`` in ``dtype``."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from openfal.backends.local import tiny

    if smoke:
        cfg_t5, cfg_clip = tiny.t5_config(), None
    else:
        cfg_t5, cfg_clip = T5Config(**T5_XXL), CLIPTextConfig(**CLIP_L)
    with _default(device, dtype):
        t5 = T5EncoderModel(cfg_t5).eval()
        clip = CLIPTextModel(cfg_clip).eval() if cfg_clip else tiny.text_components()["text_encoder"].to(device, dtype)
        vae = tiny.flux_vae().to(device, dtype) if smoke else AutoencoderKL(**VAE).eval()
        transformer = build_transformer(device, dtype, smoke)
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
        ),
        "vae": vae,
        "text_encoder": clip,
        "tokenizer": tiny.clip_tokenizer(),
        "text_encoder_2": t5,
        "tokenizer_2": tiny.t5_tokenizer(),
        "transformer": transformer,
    }


def build_transformer(device: torch.device, dtype: torch.dtype, smoke: bool) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    from openfal.backends.local import tiny

    with _default(device, dtype):
        if smoke:
            return tiny.flux_transformer(guidance_embeds=True).to(device, dtype)
        return FluxTransformer2DModel(**FLUX_DEV).eval()


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


# -- modes ----------------------------------------------------------------------------------


def compile_blocks(transformer: Any) -> None:
    transformer.compile_repeated_blocks(fullgraph=True)


def to_fp8(transformer: Any) -> None:
    """torchao float8 dynamic activation + weight quantisation of the Linear layers."""
    import torchao.quantization as q

    config = getattr(q, "Float8DynamicActivationFloat8WeightConfig", None)
    if config is not None:
        q.quantize_(transformer, config())
    else:  # torchao < 0.10
        q.quantize_(transformer, q.float8_dynamic_activation_float8_weight())


def fp8_unavailable() -> str | None:
    try:
        import torchao.quantization  # noqa: F401
    except ImportError:
        return "torchao is not installed (pip install torchao)"
    if torch.cuda.is_available() and torch.cuda.get_device_capability() < (8, 9):
        return f"float8 needs compute capability 8.9+, this GPU has {torch.cuda.get_device_capability()}"
    return None


# -- timing ----------------------------------------------------------------------------------


def time_step(transformer: Any, width: int, height: int, device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    """Median seconds of one transformer forward at ``width`` x ``height``."""
    n = (height // 16) * (width // 16)
    config = transformer.config
    hidden = torch.randn(1, n, config.in_channels, device=device, dtype=dtype)
    text = torch.randn(1, TEXT_TOKENS, config.joint_attention_dim, device=device, dtype=dtype)
    pooled = torch.randn(1, config.pooled_projection_dim, device=device, dtype=dtype)
    img_ids = torch.zeros(height // 16, width // 16, 3, device=device)
    img_ids[..., 1] = torch.arange(height // 16, device=device)[:, None]
    img_ids[..., 2] = torch.arange(width // 16, device=device)[None, :]
    img_ids = img_ids.reshape(-1, 3).to(dtype)
    txt_ids = torch.zeros(TEXT_TOKENS, 3, device=device, dtype=dtype)
    kwargs = {
        "hidden_states": hidden,
        "encoder_hidden_states": text,
        "pooled_projections": pooled,
        "timestep": torch.tensor([0.5], device=device, dtype=dtype),
        "img_ids": img_ids,
        "txt_ids": txt_ids,
        "guidance": torch.tensor([3.5], device=device, dtype=torch.float32) if config.guidance_embeds else None,
        "return_dict": False,
    }
    with torch.inference_mode():
        for _ in range(3):  # warm-up (and compilation)
            transformer(**kwargs)
        return statistics.median(_timed(lambda: transformer(**kwargs), device) for _ in range(repeats))


def time_image(pipe: Any, width: int, height: int, steps: int, device: torch.device, repeats: int) -> float:
    """Median seconds of a whole pipeline call for one image."""

    def call() -> None:
        pipe(
            "a lighthouse on a cliff at dawn",
            width=width,
            height=height,
            num_inference_steps=steps,
            guidance_scale=3.5,
            generator=torch.Generator("cpu").manual_seed(0),
            output_type="pil",
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights may decode to NaN pixels
        call()  # warm-up
        return statistics.median(_timed(call, device) for _ in range(repeats))


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# -- main -------------------------------------------------------------------------------------


def run_mode(
    mode: str, components: dict[str, Any], sizes: list[tuple[int, int]], args: argparse.Namespace, device: torch.device, dtype: torch.dtype
) -> dict[tuple[int, int], Result]:
    from diffusers import FluxPipeline

    if mode == "fp8":
        to_fp8(components["transformer"])
    if mode in ("compile", "fp8"):
        compile_blocks(components["transformer"])
    pipe = FluxPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    out = {}
    for width, height in sizes:
        step = time_step(components["transformer"], width, height, device, dtype, args.repeats * 3)
        image = time_image(pipe, width, height, args.steps, device, args.repeats)
        out[(width, height)] = Result(step, image)
        print(f"  {mode} {width}x{height}: {step:.4f} s/step, {image:.3f} s/image", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="1024x768,1024x1024")
    parser.add_argument("--modes", default="bf16,compile,fp8")
    parser.add_argument("--smoke", action="store_true", help="tiny configs on CPU: checks the script, not the GPU")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense BF16 peak for MFU (default: by device name)")
    args = parser.parse_args()
    print("command:", " ".join([".venv/bin/python", *sys.argv]))
    if not torch.cuda.is_available() and not args.smoke:
        print("CUDA is not available: this benchmark needs an NVIDIA GPU; nothing measured.")
        return 0
    device = torch.device("cpu") if args.smoke else torch.device("cuda")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    sizes = [(64, 48), (64, 64)] if args.smoke else parse_sizes(args.sizes)
    steps_note = f"{args.steps} steps"
    if args.smoke:
        args.steps = 2
        steps_note = "2 steps (smoke)"
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (smoke run)"
    print(f"device: {name}; torch {torch.__version__}; FLUX.1-dev shapes, random weights, {steps_note}, median of {args.repeats}")
    results: dict[str, dict[tuple[int, int], Result]] = {}
    for mode in args.modes.split(","):
        reason = fp8_unavailable() if mode == "fp8" else None
        if reason:
            print(f"  {mode}: skipped: {reason}")
            continue
        components = build_components(device, dtype, args.smoke)
        try:
            results[mode] = run_mode(mode, components, sizes, args, device, dtype)
        except Exception as exc:  # a mode that cannot run here is reported, not fatal
            print(f"  {mode}: failed: {type(exc).__name__}: {exc}")
        del components
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        torch._dynamo.reset()
    report(results, sizes, smoke=args.smoke, peak=args.peak_tflops or peak_for(name), device_name=name)
    return 0


def report(
    results: dict[str, dict[tuple[int, int], Result]], sizes: list[tuple[int, int]], *, smoke: bool, peak: float, device_name: str
) -> None:
    if not results:
        print("no mode ran")
        return
    base_mode = "bf16" if "bf16" in results else next(iter(results))
    print(f"{'size':<10} {'mode':<8} {'s/step':>8} {'ratio':>6} {'s/image':>8} {'ratio':>6} {'TFLOP/step':>10} {'MFU':>6}")
    for size in sizes:
        base = results[base_mode][size]
        flops = tflop_per_step(*size)
        for mode, by_size in results.items():
            r = by_size[size]
            mfu = "n/a" if smoke else f"{flops / r.step_seconds / peak:.0%}"
            print(
                f"{size[0]}x{size[1]:<5} {mode:<8} {r.step_seconds:>8.4f} {r.step_seconds / base.step_seconds:>6.2f}"
                f" {r.image_seconds:>8.3f} {r.image_seconds / base.image_seconds:>6.2f} {flops:>10.1f} {mfu:>6}"
            )
    counted = "of FLUX.1-dev at that size, not of the tiny smoke model" if smoke else "of FLUX.1-dev"
    print(f"ratios are to {base_mode}; TFLOP/step {counted}; MFU = TFLOP/step / (s/step) / {peak:.0f} TFLOP/s ({device_name} dense BF16)")


if __name__ == "__main__":
    sys.exit(main())
