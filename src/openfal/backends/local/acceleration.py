"""Acceleration profiles: what the serving engine does to a pipeline after loading it.

``OPENFAL_ACCELERATION`` picks one of

* ``off``: the pipeline as diffusers builds it (the reference every other profile is
  tested against);
* ``compile``: lossless speed-ups (flux-fast's recipe less its lossy step):
  the transformer's Q/K/V (and added Q/K/V) projections fused into one GEMM each, with
  the unfused originals dropped so memory does not grow; the fastest attention backend
  the device has, measured at load (attention.py); and regional compilation of the
  family's repeated blocks (``Family.compile_blocks``: FLUX.1's 19 double and 38 single
  blocks share two compiled graphs) with a **dynamic token dimension**: one graph per
  block class serves every image size, text length and reference image (Kontext,
  Redux, image-to-image), so nothing runs eager and nothing recompiles for a new size;
* ``fp8``: ``compile`` plus torchao's float8 dynamic activation + weight quantisation of
  the transformer's Linear layers with per-row scales (lossy, but the fastest known
  FLUX recipe on Hopper). It needs compute capability 8.9+ and torchao >= 0.16
  (``pip install 'openfal[gpu]'``); elsewhere it falls back to ``compile`` and says why.
  torchao is asked not to touch inductor's process-wide settings
  (``set_inductor_config=False``: it would turn on coordinate-descent tuning, which
  multiplies every compile's time);
* ``auto`` (default): ``fp8`` where it is supported, else ``compile`` on CUDA, and
  ``off`` on CPU (compiling on CPU costs more than it saves for a server).

The blocks are compiled by replacing each block's ``forward`` with a compiled one (not
``nn.Module.compile``, which compiles ``_call_impl`` and with it any hook diffusers puts
on ``forward``): diffusers' step caches (the ``high`` tier of fal's ``acceleration``
input, tiers.py) wrap the compiled forward and make their skip decisions outside the
graph. Compilation happens at warm-up (warmup.py): batch 1 and batch 2+ (dynamo
specialises sizes 0 and 1), LoRA slots on and off.
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
#: the Linear names fusion replaces (FluxAttention keeps them otherwise: ~1.9 GB in bf16)
UNFUSED = ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")
#: marks a module already accelerated (modules are shared between pipelines)
MARK = "_openfal_acceleration"


@dataclass(frozen=True, slots=True)
class Acceleration:
    """A resolved profile: what to apply, and why this one was chosen."""

    profile: str
    reason: str
    #: diffusers attention backend name; ``auto``: the fastest measured at load
    #: (attention.py); None: torch's native SDPA dispatch
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
        return f"torchao >= 0.16 is not importable ({exc}); install it with pip install 'openfal[gpu]'"
    return None


def best_attention_backend(device: torch.device, requested: str = "auto") -> str | None:
    """The attention backend for ``device``: an explicit name is used as given;
    ``auto`` on CUDA is settled by measurement once the transformer is loaded
    (attention.choose); ``native`` (and any CPU) is torch's SDPA dispatch."""
    if requested not in ("auto", "native"):
        return requested
    if requested == "native" or device.type != "cuda":
        return None
    return "auto"


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
    """torchao's float8 dynamic activation + weight config with per-row scales (torchao
    >= 0.16). ``set_inductor_config=False``: the default True calls torchao's
    ``recommended_inductor_config_setter`` for every quantised layer, which turns on
    coordinate-descent tuning for the whole process (several times longer compiles)."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

    return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)


#: the block lists compiled when a family names none (diffusers' FLUX-style transformers)
DEFAULT_BLOCKS = ("transformer_blocks", "single_transformer_blocks")


def apply(pipe: Any, acceleration: Acceleration, *, quantize_on: torch.device | None = None, blocks: tuple[str, ...] = ()) -> list[str]:
    """Apply ``acceleration`` to ``pipe``'s transformer in place, on whatever device it
    is (once per module: pipelines share modules); the steps taken. The engine runs the
    same steps around its memory placement (placement.py)."""
    steps: list[str] = []
    if not acceleration.compiles:
        return steps
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None and getattr(transformer, MARK, None) is None:
        steps += fuse(transformer)
        if acceleration.profile == "fp8":
            steps += quantize(transformer, acceleration.quantization or fp8_config, quantize_on)
    steps += compile_pipeline(pipe, acceleration, blocks)
    return steps


def fuse(transformer: Any) -> list[str]:
    """Fuse Q/K/V into one Linear per attention and drop the unfused copies. (Any: a
    diffusers model, whose methods beyond torch's Module no stub declares.)"""
    if not hasattr(transformer, "fuse_qkv_projections") or getattr(transformer, "_openfal_fused", False):
        return []
    transformer.fuse_qkv_projections()
    transformer._openfal_fused = True
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


def compile_pipeline(pipe: Any, acceleration: Acceleration, blocks: tuple[str, ...] = ()) -> list[str]:
    """Attention backend and regional compile (call once the weights are where they
    will run)."""
    steps: list[str] = []
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None and getattr(transformer, MARK, None) is None:
        steps += compile_transformer(transformer, acceleration, blocks)
        setattr(transformer, MARK, acceleration.profile)
    vae = getattr(pipe, "vae", None)
    if vae is not None and getattr(vae, MARK, None) is None:
        steps += accelerate_vae(vae)
        setattr(vae, MARK, acceleration.profile)
    return steps


def compile_transformer(transformer: torch.nn.Module, acceleration: Acceleration, blocks: tuple[str, ...] = ()) -> list[str]:
    from openfal.backends.local import attention

    steps = fuse(transformer)
    backend = acceleration.attention_backend
    if backend == "auto":
        backend, line = attention.choose(transformer)
        steps.append(line)
    if backend is not None:
        try:
            transformer.set_attention_backend(backend)  # type: ignore[operator]
            steps.append(f"attention backend {backend}")
        except Exception as exc:  # a backend whose kernels do not load here: SDPA stays
            log.warning("attention backend %s unavailable (%s); using torch SDPA", backend, exc)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, acceleration.recompile_limit)
    torch._dynamo.config.accumulated_recompile_limit = max(
        torch._dynamo.config.accumulated_recompile_limit, 4 * acceleration.recompile_limit
    )
    if next(transformer.parameters()).is_cuda:
        _inductor_flags()
    count = compile_blocks(transformer, blocks or DEFAULT_BLOCKS)
    steps.append(f"{count} repeated blocks compiled (regional, fullgraph, dynamic token dimension)")
    return steps


def compile_blocks(transformer: torch.nn.Module, names: tuple[str, ...]) -> int:
    """Replace the ``forward`` of every block in the ``names`` ModuleLists with a
    compiled one: blocks of one class share their graphs (dynamo keys them on the code
    object; parameters are graph inputs), dynamic in every activation dimension, so a
    new image size or text length reuses them. Duck sizing is turned off: with it, a
    token count that happens to equal a weight dimension (1024x768 has 3072 image tokens,
    FLUX's hidden size is 3072) would be specialised to it and recompile later."""
    import torch.fx.experimental._config as fx_config

    fx_config.use_duck_shape = False
    count = 0
    for name in names:
        for block in getattr(transformer, name, None) or ():
            if getattr(block, COMPILED_FORWARD, None) is None:
                eager = block.forward
                block.forward = torch.compile(eager, fullgraph=True, dynamic=True)
                setattr(block, COMPILED_FORWARD, eager)
                count += 1
    return count


#: on a compiled block: its eager forward (the compiled one is ``block.forward``)
COMPILED_FORWARD = "_openfal_eager_forward"


def accelerate_vae(vae: Any) -> list[str]:
    """Fused QKV in the VAE's mid-block attention (lossless). No channels_last: without
    a compiled decoder, eager GroupNorm adds NCHW/NHWC copies at full resolution."""
    steps = []
    if hasattr(vae, "fuse_qkv_projections"):
        try:
            vae.fuse_qkv_projections()
            steps.append("VAE QKV fused")
        except ValueError as exc:  # a VAE with added KV projections
            log.info("VAE QKV not fused: %s", exc)
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
