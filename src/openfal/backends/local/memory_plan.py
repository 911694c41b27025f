"""Memory plans: where each model's components live on a GPU of a given size.

Weights are counted exactly, from the real component configs each family declares
(``Model.components``) built on the ``meta`` device: bf16 bytes per parameter, and for
float8 components one byte per quantised Linear weight plus its per-row fp32 scales (the
layers torchao quantises; the rest stays bf16). Activations are estimated (documented below) for the
largest allowed call: ``max_batch_images`` images at the largest warm-up size.

Placements, tried in order of preference (the first that fits wins):

1. ``resident``: every component on the GPU;
2. ``none`` with float8 text encoders: every component resident, the text encoders'
   Linear weights in float8 (weight-only 8-bit T5 is near-lossless; FLUX.1's T5 takes
   4.4 GiB instead of 8.9, so a 24 GiB card keeps it resident beside a float8
   transformer; FLUX.2 [dev]'s 24B Mistral encoder takes 24 GiB instead of 48). Each
   prompt is encoded on the GPU, and repeated prompts not at all (prompt_cache.py);
3. ``text_encoders``: the text encoders wait in host memory and visit the GPU to encode
   a prompt, then leave before denoising starts (where float8 is not available: the
   9 GiB visit costs 1.5-3 s per request over PCIe);
4. ``model``: diffusers' model offload (each component on the GPU only while it runs);
5. ``group``: diffusers' block-level group offload, the last resort (slow: weights
   stream over PCIe every step).

Under the ``fp8`` profile each placement uses a float8 transformer; otherwise bf16 is
tried first (lossless) and float8 only as a memory saver where the device supports it,
before any offload. The VAE decodes all images of a call at once when that fits, else
one at a time (``vae_decode_batch``).

Activation estimates (bf16, inference mode; conservative):
* transformer: each model's own estimate (``Model.activation_bytes``; for the FLUX
  families ``16 * N * D * 2`` bytes per image, ``N`` tokens, ``D`` the hidden width);
* VAE decode: ``4 * H * W * 256 * 2`` bytes per image (the 256-channel full-resolution
  upsample and the resnet tensors around it), or the model's own estimate
  (``Model.vae_decode_bytes``: a video VAE's peak for all frames of the largest video);
* video models are planned for their ``Model.largest_call`` (width, height, frames), one
  video per call, instead of the warm-up sizes at ``max_batch_images``;
* text encoders: 0.25 GiB; CUDA context and allocator slack: 1 GiB.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from openfal.backends.local.families.contract import Component

GIB = 1024**3
#: held while modules are built: diffusers/accelerate build "empty" models by patching
#: ``nn.Module`` process-wide (``init_empty_weights``), so a model built in another
#: thread meanwhile would get meta tensors (two GPUs' engines loading at once)
CONSTRUCTION_LOCK = threading.RLock()
RESERVE_BYTES = 1 * GIB
TEXT_ACTIVATION_BYTES = GIB // 4
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
#: the denoisers (Wan 2.2 A14B has two experts; under model offload one is on the GPU at a time)
TRANSFORMERS = ("transformer", "transformer_2")
#: text encoders larger than this stay resident in float8 rather than visit the GPU per
#: prompt (about a second of PCIe transfer each way at 16 GiB)

def planned() -> tuple[str, ...]:
    """The models the local backend plans: every family's (the safety checker is added
    to each image family's plan)."""
    from openfal.backends.local.families import all_models

    return tuple(m.name for m in all_models())


PLANNED = planned()
DEFAULT_SIZES = ("square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9")


@dataclass(frozen=True, slots=True)
class ComponentSize:
    bf16: int
    #: bytes with float8 Linear weights (transformers only)
    fp8: int | None
    #: the largest repeated block (group offload streams one at a time)
    largest_block: int
    #: sum of in + out features over the Linear layers (a rank-r LoRA slot on every
    #: Linear holds r times this many parameters)
    linear_sides: int = 0


@dataclass(frozen=True, slots=True)
class ModelPlan:
    model: str
    fits: bool
    #: peak GPU memory the placement needs (weights on the GPU + activations + reserve)
    resident_gib: float
    transformer_dtype: str
    #: none | text_encoders | model | group
    offload: str
    vae_decode_batch: int
    weights_gib: float
    activations_gib: float
    components_gib: dict[str, float] = field(default_factory=dict)
    note: str = ""
    #: the text encoders' weights: bfloat16, or float8_e4m3fn (Linear layers quantised)
    text_encoder_dtype: str = "bfloat16"
    #: component -> where it lives between runs and in which dtype ("gpu bfloat16", ...)
    where: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# -- sizes from the real configs --------------------------------------------------------------


@functools.cache
def component_sizes(model: str) -> dict[str, ComponentSize]:
    """Bytes of each component of ``model``, from its real config on the meta device."""
    from openfal.backends.local.registry import MODELS

    return {name: _measure(component, float8=name in FLOAT8_COMPONENTS) for name, component in MODELS[model].components.items()}


@functools.cache
def slot_bytes(model: str, rank: int) -> int:
    """bf16 bytes of one LoRA slot of ``rank`` on ``model``'s transformer: on the layers
    its family targets, inside its blocks, counted after Q/K/V fusion (lora_bank)."""
    import torch

    from openfal.backends.local import lora_bank
    from openfal.backends.local.families import family_of_model
    from openfal.backends.local.registry import MODELS

    family = family_of_model(model)
    with CONSTRUCTION_LOCK, torch.device("meta"):
        transformer = build_component(MODELS[model].components["transformer"])
    return 2 * lora_bank.slot_parameters(transformer, rank=rank, targets=family.lora_targets, blocks=family.compile_blocks, fused=family.accelerated)


#: the components whose Linear weights may be float8 (the rest stay bf16)
FLOAT8_COMPONENTS = ("transformer", *TEXT_ENCODERS)


def _measure(component: Component, *, float8: bool) -> ComponentSize:
    import torch

    with CONSTRUCTION_LOCK, torch.device("meta"):
        module = build_component(component)
    bf16 = sum(p.numel() * 2 for p in module.parameters()) + sum(b.numel() * b.element_size() for b in module.buffers())
    fp8 = None
    if float8:
        fp8 = bf16
        for sub in module.modules():
            if isinstance(sub, torch.nn.Linear) and sub.in_features % 16 == 0 and sub.out_features % 16 == 0:
                fp8 -= sub.weight.numel() * 2
                fp8 += sub.weight.numel() * 1 + sub.out_features * 4
    blocks = [b for name in ("transformer_blocks", "single_transformer_blocks", "layers", "blocks") for b in getattr(module, name, [])]
    block = getattr(getattr(module, "encoder", None), "block", None)
    blocks += list(block) if block is not None else []
    largest = max((sum(p.numel() * 2 for p in b.parameters()) for b in blocks), default=bf16)
    sides = sum(m.in_features + m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))
    return ComponentSize(bf16, fp8, largest, sides)


def build_component(component: Component) -> Any:
    """The module a component's config describes (on whatever device is current)."""
    import importlib

    library, _, name = component.cls.rpartition(".")
    cls = getattr(importlib.import_module(library), name)
    if component.config_cls is None:
        return cls(**component.config)
    config_cls = getattr(importlib.import_module(library), component.config_cls)
    return cls(config_cls(**component.config))


# -- activations ------------------------------------------------------------------------------


def transformer_activation_bytes(model: str, width: int, height: int, images: int) -> int:
    from openfal.backends.local.registry import MODELS

    estimate = MODELS[model].activation_bytes
    return estimate(width, height, images) if estimate is not None else 0


def vae_activation_bytes(width: int, height: int, images: int) -> int:
    return 4 * width * height * 256 * 2 * images


def vae_decode_bytes(model: str, width: int, height: int, count: int) -> int:
    """The VAE decode's peak for ``count`` images (or a video's ``count`` frames)."""
    from openfal.backends.local.registry import MODELS

    estimate = MODELS[model].vae_decode_bytes
    return estimate(width, height, count) if estimate is not None else vae_activation_bytes(width, height, count)


def largest_size(size_names: tuple[str, ...]) -> tuple[int, int]:
    from openfal.backends.local.warmup import parse_size

    return max((parse_size(name) for name in size_names), key=lambda wh: wh[0] * wh[1])


# -- planning ---------------------------------------------------------------------------------


def plan_model(
    model: str,
    gpu_memory_bytes: int,
    *,
    max_images: int = 4,
    sizes: tuple[str, ...] = DEFAULT_SIZES,
    fp8_supported: bool = True,
    prefer_fp8: bool = False,
    safety_checker: bool = True,
    without: frozenset[str] = frozenset(),
    lora_slots: int = 0,
    lora_rank: int = 0,
) -> ModelPlan:
    """The placement of ``model`` on a GPU with ``gpu_memory_bytes`` for it (see the
    module docstring for the order in which placements are tried); ``without``: the
    components this pipeline leaves out (the Redux base has no text encoders)."""
    from openfal.backends.local.families import family_of_model
    from openfal.backends.local.families.images import ImageFamily
    from openfal.backends.local.registry import MODELS

    family = family_of_model(model)
    parts = {name: part for name, part in component_sizes(model).items() if name not in without}
    if lora_slots and "transformer" in parts:  # compiled LoRA models: bf16 slots on the family's targets
        t = parts["transformer"]
        extra = lora_slots * slot_bytes(model, lora_rank)
        parts["transformer"] = ComponentSize(t.bf16 + extra, t.fp8 + extra if t.fp8 is not None else None, t.largest_block, t.linear_sides)
    if safety_checker and isinstance(family, ImageFamily):
        parts["safety_checker"] = component_sizes("safety-checker")["classifier"]
    largest_call = MODELS[model].largest_call
    if largest_call is not None:  # a video model: one video of its largest shape per call
        width, height, count = largest_call
        decode_batches = [1]
        act_vae = {1: vae_decode_bytes(model, width, height, count)}
    else:
        (width, height), count = largest_size(sizes), max_images
        decode_batches = sorted({max_images, 1}, reverse=True)
        act_vae = {n: vae_decode_bytes(model, width, height, n) for n in decode_batches}
    act_t = transformer_activation_bytes(model, width, height, count)
    has_transformer = "transformer" in parts
    dtypes = ["bf16"]
    if has_transformer and family.accelerated and fp8_supported and parts["transformer"].fp8 is not None:
        dtypes = ["fp8"] if prefer_fp8 else ["bf16", "fp8"]
    texts = any(name in parts for name in TEXT_ENCODERS)
    # (offload, text encoders in float8): resident float8 text encoders come before moving
    # them off the GPU for every prompt, and both before any offload that streams the
    # transformer
    modes = [("none", False)]
    if texts and fp8_supported:
        modes.append(("none", True))
    if texts:
        modes.append(("text_encoders", False))
    modes += [("model", False), ("group", False)]
    candidates = [
        (offload, dtype, text_fp8, decode_batch)
        for offload, text_fp8 in modes
        for dtype in dtypes
        for decode_batch in decode_batches
    ]
    best: ModelPlan | None = None
    for offload, dtype, text_fp8, decode_batch in candidates:
        act = act_vae[decode_batch] if "vae" in parts else 0
        plan = _evaluate(model, parts, offload, dtype, text_fp8, decode_batch, act_t, act, gpu_memory_bytes)
        if plan.fits:
            return plan
        if best is None or plan.resident_gib < best.resident_gib:
            best = plan
    assert best is not None
    return best


#: what each offload mode means, shown beside a plan
OFFLOAD_NOTES = {
    "none": "all components resident",
    "text_encoders": "T5 and CLIP in host memory, on the GPU only to encode the prompt",
    "model": "diffusers model offload: each component on the GPU only while it runs",
    "group": "diffusers block-level group offload (slow: weights stream every step)",
}


def _evaluate(
    model: str,
    parts: dict[str, ComponentSize],
    offload: str,
    dtype: str,
    text_fp8: bool,
    decode_batch: int,
    act_t: int,
    act_vae: int,
    budget: int,
) -> ModelPlan:
    def float8(name: str) -> bool:
        return parts[name].fp8 is not None and ((name == "transformer" and dtype == "fp8") or (name in TEXT_ENCODERS and text_fp8))

    def size(name: str) -> int:
        part = parts[name]
        return part.fp8 if float8(name) and part.fp8 is not None else part.bf16

    act_run = max(act_t if "transformer" in parts else 0, act_vae)
    weights, peak = _weights_and_peak(parts, size, offload, act_t, act_vae, act_run)
    peak += RESERVE_BYTES
    plan_dtype = "float8_e4m3fn" if dtype == "fp8" else "bfloat16"
    return ModelPlan(
        model=model,
        fits=peak <= budget,
        resident_gib=round(peak / GIB, 2),
        transformer_dtype=plan_dtype if "transformer" in parts else "none",
        offload=offload,
        vae_decode_batch=decode_batch,
        weights_gib=round(weights / GIB, 2),
        activations_gib=round(act_run / GIB, 2),
        components_gib={n: round(size(n) / GIB, 3) for n in parts},
        note=OFFLOAD_NOTES[offload] + (", text encoders in float8" if text_fp8 else ""),
        text_encoder_dtype="float8_e4m3fn" if text_fp8 else "bfloat16",
        where={n: f"{_where(n, offload)} {'float8_e4m3fn' if float8(n) else 'bfloat16'}" for n in parts},
    )


def _where(name: str, offload: str) -> str:
    """Where a component lives between runs under an offload mode."""
    if offload == "none" or (offload == "text_encoders" and name not in TEXT_ENCODERS):
        return "gpu"
    if offload == "text_encoders":
        return "cpu (on the gpu to encode)"
    if offload == "model":
        return "cpu (on the gpu while it runs)"
    return "cpu (blocks stream to the gpu)"


def _weights_and_peak(
    parts: dict[str, ComponentSize], size: Callable[[str], int], offload: str, act_t: int, act_vae: int, act_run: int
) -> tuple[int, int]:
    """Bytes resident between runs, and the peak while one runs, for an offload mode."""
    texts = [n for n in TEXT_ENCODERS if n in parts]
    if offload == "none":
        weights = sum(size(n) for n in parts)
        return weights, weights + max(act_run, TEXT_ACTIVATION_BYTES)
    if offload == "text_encoders":
        weights = sum(size(n) for n in parts if n not in texts)
        encoding = weights + sum(size(n) for n in texts) + TEXT_ACTIVATION_BYTES
        return weights, max(encoding, weights + act_run)
    if offload == "model":
        peak = max(
            max((size(n) + act_t for n in TRANSFORMERS if n in parts), default=0),
            size("vae") + act_vae if "vae" in parts else 0,
            max((size(n) for n in texts), default=0) + TEXT_ACTIVATION_BYTES,
            max(size(n) for n in parts),
        )
        return max(size(n) for n in parts), peak
    # group: two blocks in flight (one computing, one prefetched) per component
    weights = max(2 * parts[n].largest_block for n in parts)
    return weights, weights + max(act_run, TEXT_ACTIVATION_BYTES)


def plan_all(
    gpu_memory_gib: float,
    *,
    models: tuple[str, ...] | None = None,
    max_images: int = 4,
    sizes: tuple[str, ...] = DEFAULT_SIZES,
    fp8_supported: bool = True,
    prefer_fp8: bool = False,
    lora_slots: int = 0,
    lora_rank: int = 0,
) -> dict[str, Any]:
    """``openfal models plan``: the plan of every model for a card of ``gpu_memory_gib``
    (``lora_slots`` of ``lora_rank`` on the models that serve LoRAs, when compiled)."""
    from openfal.backends.local.registry import MODELS

    budget = int(gpu_memory_gib * GIB)
    plans = [
        plan_model(
            m, budget, max_images=max_images, sizes=sizes, fp8_supported=fp8_supported, prefer_fp8=prefer_fp8,
            lora_slots=lora_slots if MODELS[m].loras else 0, lora_rank=lora_rank,
        ).as_json()
        for m in (models if models is not None else PLANNED)
    ]  # fmt: skip
    return {
        "gpu_memory_gib": gpu_memory_gib,
        "max_batch_images": max_images,
        "largest_size": "x".join(map(str, largest_size(sizes))),
        "fp8_supported": fp8_supported,
        "models": plans,
    }
