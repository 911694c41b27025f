"""Acceleration profiles: what the serving engine does to a pipeline after loading it.

``OPENFAL_ACCELERATION`` picks one of

* ``off``: the pipeline as diffusers builds it (the reference every other profile is
  tested against);
* ``compile``: lossless speed-ups (flux-fast's recipe less its lossy step):
  the transformer's Q/K/V (and added Q/K/V) projections fused into one GEMM each, with
  the unfused originals dropped so memory does not grow; the best attention backend the
  device has; the VAE in channels_last; and regional compilation
  (``compile_repeated_blocks``: the 19 double and 38 single blocks share two compiled
  graphs, so a cold compile takes seconds, not a minute) with a recompile limit raised
  to cover every warmed shape;
* ``fp8``: ``compile`` plus torchao's float8 dynamic activation + weight quantisation of
  the transformer's Linear layers with per-row scales (lossy, but the fastest known
  FLUX recipe on Hopper). It needs compute capability 8.9+ and torchao
  (``pip install 'openfal[gpu]'``); elsewhere it falls back to ``compile`` and says why;
* ``auto`` (default): ``fp8`` where it is supported, else ``compile`` on CUDA, and
  ``off`` on CPU (compiling on CPU costs more than it saves for a server).

Nothing here is lossy unless the profile says so (fp8). Compilation happens at warm-up
(see warmup.py); a request never compiles: a warmed shape runs the compiled graphs,
any other runs under dynamo's ``force_eager`` stance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from openfal.errors import ConfigError

log = logging.getLogger("openfal.local")

PROFILES = ("off", "compile", "fp8", "auto")
#: attention backends (diffusers ``AttentionBackendName`` values) in order of preference
#: on CUDA; each is used only when its package imports
ATTENTION_PREFERENCE = (("_flash_3", "flash_attn_interface"), ("flash", "flash_attn"))
#: the Linear names fusion replaces (FluxAttention keeps them otherwise: ~1.9 GB in bf16)
UNFUSED = ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")
#: marks a module already accelerated (modules are shared between pipelines)
MARK = "_openfal_acceleration"


@dataclass(frozen=True, slots=True)
class Acceleration:
    """A resolved profile: what to apply, and why this one was chosen."""

    profile: str
    reason: str
    #: diffusers attention backend name, or None for torch's native SDPA dispatch
    attention_backend: str | None = None
    #: builds the torchao quantisation config (fp8); tests pass int8 weight-only, which
    #: runs on CPU, to exercise the same quantise + fuse + compile plumbing
    quantization: Callable[[], Any] | None = field(default=None, compare=False)
    #: dynamo's recompile limit: compiled blocks keep one entry per warmed shape, model
    #: and GPU (6 sizes x 4 batch sizes x 3 models x 8 GPUs stays under it)
    recompile_limit: int = 1024

    @property
    def compiles(self) -> bool:
        return self.profile in ("compile", "fp8")


def fp8_unsupported(device: torch.device) -> str | None:
    """Why float8 cannot run on ``device`` (None: it can)."""
    if device.type != "cuda":
        return f"float8 matmuls need a CUDA GPU of compute capability 8.9+, this engine runs on {device.type}"
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 9):
        return f"float8 needs compute capability 8.9+, {torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}"
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow  # noqa: F401
    except ImportError as exc:
        return f"torchao >= 0.10 is not importable ({exc}); install it with pip install 'openfal[gpu]'"
    return None


def best_attention_backend(device: torch.device, requested: str = "auto") -> str | None:
    """The attention backend for ``device``: an explicit name is used as given;
    ``auto`` takes FlashAttention 3, then 2, when installed, else torch's SDPA (which
    picks flash/cuDNN/efficient kernels itself); ``native`` forces SDPA."""
    if requested not in ("auto", "native"):
        return requested
    if requested == "native" or device.type != "cuda":
        return None
    import importlib.util

    for backend, package in ATTENTION_PREFERENCE:
        if importlib.util.find_spec(package) is not None:
            return backend
    return None


def resolve(
    requested: str,
    device: torch.device,
    *,
    attention: str = "auto",
    quantization: Callable[[], Any] | None = None,
) -> Acceleration:
    """The profile to run: ``requested`` settled against what ``device`` supports.

    ``quantization`` replaces fp8's torchao config (and its device check): the CPU tests
    use int8 weight-only through the same path.
    """
    if requested not in PROFILES:
        raise ConfigError(f"OPENFAL_ACCELERATION={requested!r}: use one of {', '.join(PROFILES)}")
    backend = best_attention_backend(device, attention)
    if requested == "off":
        return Acceleration("off", "OPENFAL_ACCELERATION=off")
    if requested == "auto" and device.type != "cuda":
        return Acceleration("off", f"auto on {device.type}: compiling pays only on a GPU")
    wants_fp8 = requested in ("fp8", "auto")
    if wants_fp8 and quantization is not None:
        return Acceleration("fp8", f"{requested} with a given quantisation", backend, quantization)
    if wants_fp8:
        why_not = fp8_unsupported(device)
        if why_not is None:
            return Acceleration("fp8", f"{requested}: float8 per-row on {torch.cuda.get_device_name(device)}", backend, fp8_config)
        if requested == "fp8":
            log.warning("OPENFAL_ACCELERATION=fp8 falls back to compile: %s", why_not)
        return Acceleration("compile", f"{requested} without fp8: {why_not}", backend)
    return Acceleration("compile", "OPENFAL_ACCELERATION=compile", backend)


def fp8_config() -> Any:
    """torchao's float8 dynamic activation + weight config with per-row scales (the
    config API of torchao >= 0.10; there is no fallback to the legacy functions)."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

    return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())


def apply(pipe: Any, acceleration: Acceleration, *, quantize_on: torch.device | None = None) -> list[str]:
    """Apply ``acceleration`` to ``pipe``'s transformer and VAE in place, on whatever
    device they are (once per module: pipelines share modules); the steps taken.
    The engine runs the same steps around its memory placement (placement.py)."""
    steps: list[str] = []
    if not acceleration.compiles:
        return steps
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None and getattr(transformer, MARK, None) is None:
        steps += fuse(transformer)
        if acceleration.profile == "fp8":
            steps += quantize(transformer, acceleration.quantization or fp8_config, quantize_on)
    steps += compile_pipeline(pipe, acceleration)
    return steps


def fuse(transformer: torch.nn.Module) -> list[str]:
    """Fuse Q/K/V into one Linear per attention and drop the unfused copies."""
    if not hasattr(transformer, "fuse_qkv_projections") or getattr(transformer, "_openfal_fused", False):
        return []
    transformer.fuse_qkv_projections()
    transformer._openfal_fused = True  # type: ignore[assignment]
    dropped = drop_unfused(transformer)
    return [f"fused QKV projections ({dropped} unfused Linear layers dropped)"]


def quantize(module: torch.nn.Module, config: Callable[[], Any], device: torch.device | None = None) -> list[str]:
    """Quantise a transformer's or text encoder's Linear layers with ``config()``
    (torchao), layer by layer onto ``device`` when given (so a bf16 copy never has to
    fit the GPU whole). Once per module: pipelines share modules."""
    if getattr(module, "_openfal_quantized", False):
        return []
    from torchao.quantization import quantize_

    built = config()
    quantize_(module, built, filter_fn=_quantizable, device=device)
    module._openfal_quantized = True  # type: ignore[assignment]
    return [f"Linear layers quantised with {type(built).__name__}"]


def compile_pipeline(pipe: Any, acceleration: Acceleration) -> list[str]:
    """Attention backend, channels_last VAE and regional compile (call once the
    weights are where they will run)."""
    steps: list[str] = []
    transformer = getattr(pipe, "transformer", None)
    vae = getattr(pipe, "vae", None)
    if transformer is not None and getattr(transformer, MARK, None) is None:
        steps += compile_transformer(transformer, acceleration)
        setattr(transformer, MARK, acceleration.profile)
    if vae is not None and getattr(vae, MARK, None) is None:
        steps += accelerate_vae(vae)
        setattr(vae, MARK, acceleration.profile)
    return steps


def compile_transformer(transformer: torch.nn.Module, acceleration: Acceleration) -> list[str]:
    steps = fuse(transformer)
    if acceleration.attention_backend is not None:
        try:
            transformer.set_attention_backend(acceleration.attention_backend)  # type: ignore[operator]
            steps.append(f"attention backend {acceleration.attention_backend}")
        except Exception as exc:  # a backend whose kernels do not load here: SDPA stays
            log.warning("attention backend %s unavailable (%s); using torch SDPA", acceleration.attention_backend, exc)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, acceleration.recompile_limit)
    torch._dynamo.config.accumulated_recompile_limit = max(
        torch._dynamo.config.accumulated_recompile_limit, 4 * acceleration.recompile_limit
    )
    if next(transformer.parameters()).is_cuda:
        _inductor_flags()
    transformer.compile_repeated_blocks(fullgraph=True, dynamic=False)  # type: ignore[operator]
    steps.append("repeated blocks compiled (regional, fullgraph, static shapes)")
    return steps


def accelerate_vae(vae: torch.nn.Module) -> list[str]:
    steps = []
    if hasattr(vae, "fuse_qkv_projections"):
        try:
            vae.fuse_qkv_projections()
            steps.append("VAE QKV fused")
        except ValueError as exc:  # a VAE with added KV projections
            log.info("VAE QKV not fused: %s", exc)
    vae.to(memory_format=torch.channels_last)
    steps.append("VAE channels_last")
    return steps


def drop_unfused(module: torch.nn.Module) -> int:
    """Delete the Q/K/V Linears that fusion copied into ``to_qkv``/``to_added_qkv``; the
    fused path never reads them. The count dropped."""
    dropped = 0
    for sub in module.modules():
        if not getattr(sub, "fused_projections", False):
            continue
        for name in UNFUSED:
            fused = "to_added_qkv" if name.startswith("add_") else "to_qkv"
            if isinstance(getattr(sub, name, None), torch.nn.Module) and hasattr(sub, fused):
                delattr(sub, name)
                dropped += 1
    return dropped


def _quantizable(module: torch.nn.Module, name: str) -> bool:
    """Linear layers whose sides are multiples of 16 (float8 GEMM tiles); others stay."""
    return isinstance(module, torch.nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0


def _inductor_flags() -> None:
    """flux-fast's inductor settings for FLUX on CUDA, less its coordinate-descent
    tuning: that multiplies compile time per warmed shape (six sizes x four batch sizes
    at every cold start) for a few percent."""
    import torch._inductor.config as inductor

    inductor.conv_1x1_as_mm = True
    inductor.epilogue_fusion = False


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor really holds: a torchao quantised weight (a tensor subclass) is
    counted by its inner data and scales, not as ``numel * element_size`` of the dtype
    it presents."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = tensor.__tensor_flatten__()  # type: ignore[attr-defined]
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()
