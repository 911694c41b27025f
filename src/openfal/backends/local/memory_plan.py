"""Memory plans: where each model's components live on a GPU of a given size.

Weights are counted exactly, from the real component configs (model_configs.py) built
on the ``meta`` device: bf16 bytes per parameter, and for float8 transformers one byte
per quantised Linear weight plus its per-row fp32 scales (the layers torchao
quantises; the rest stays bf16). Activations are estimated (documented below) for the
largest allowed call: ``max_batch_images`` images at the largest warm-up size.

Placements, tried in order of preference (the first that fits wins):

1. ``resident``: every component on the GPU;
2. ``text_encoders``: T5 and CLIP wait in host memory and visit the GPU to encode a
   prompt, then leave before denoising starts (their 9 GiB are not needed while the
   transformer runs);
3. ``model``: diffusers' model offload (each component on the GPU only while it runs);
4. ``group``: diffusers' block-level group offload, the last resort (slow: weights
   stream over PCIe every step).

Under the ``fp8`` profile each placement uses a float8 transformer; otherwise bf16 is
tried first (lossless) and float8 only as a memory saver where the device supports it,
before any offload. The VAE decodes all images of a call at once when that fits, else
one at a time (``vae_decode_batch``).

Activation estimates (bf16, inference mode; conservative):
* transformer: ``16 * N * D * 2`` bytes per image, ``N`` tokens (image + text, plus the
  reference image's for Kontext), ``D`` = heads x head_dim (the single block's MLP,
  GELU, concat and QKV tensors are live together; attention runs in SDPA kernels with
  no N^2 matrix);
* VAE decode: ``4 * H * W * 256 * 2`` bytes per image (the 256-channel full-resolution
  upsample and the resnet tensors around it);
* text encoders: 0.25 GiB; CUDA context and allocator slack: 1 GiB.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from openfal.backends.local import model_configs

GIB = 1024**3
#: held while modules are built: diffusers/accelerate build "empty" models by patching
#: ``nn.Module`` process-wide (``init_empty_weights``), so a model built in another
#: thread meanwhile would get meta tensors (two GPUs' engines loading at once)
CONSTRUCTION_LOCK = threading.RLock()
RESERVE_BYTES = 1 * GIB
TEXT_ACTIVATION_BYTES = GIB // 4
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
#: models the local backend plans (the safety checker is added to each FLUX plan)
PLANNED = ("flux-dev", "flux-schnell", "flux-kontext-dev", "flux-redux-dev", "ltx-video")
TEXT_TOKENS = {"flux-schnell": 256}
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

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# -- sizes from the real configs --------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def component_sizes(model: str) -> dict[str, ComponentSize]:
    """Bytes of each component of ``model``, from its real config on the meta device."""
    return {name: _measure(kind, config) for name, (kind, config) in model_configs.COMPONENTS[model].items()}


def _measure(kind: str, config: dict[str, Any]) -> ComponentSize:
    import torch

    with CONSTRUCTION_LOCK, torch.device("meta"):
        module = _build(kind, config)
    bf16 = sum(p.numel() * 2 for p in module.parameters()) + sum(b.numel() * b.element_size() for b in module.buffers())
    fp8 = None
    if kind == "flux_transformer":
        fp8 = bf16
        for sub in module.modules():
            if isinstance(sub, torch.nn.Linear) and sub.in_features % 16 == 0 and sub.out_features % 16 == 0:
                fp8 -= sub.weight.numel() * 2
                fp8 += sub.weight.numel() * 1 + sub.out_features * 4
    blocks = [b for name in ("transformer_blocks", "single_transformer_blocks", "layers") for b in getattr(module, name, [])]
    block = getattr(getattr(module, "encoder", None), "block", None)
    blocks += list(block) if block is not None else []
    largest = max((sum(p.numel() * 2 for p in b.parameters()) for b in blocks), default=bf16)
    sides = sum(m.in_features + m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))
    return ComponentSize(bf16, fp8, largest, sides)


def _build(kind: str, config: dict[str, Any]) -> Any:
    if kind == "flux_transformer":
        from diffusers import FluxTransformer2DModel

        return FluxTransformer2DModel(**config)
    if kind == "vae":
        from diffusers import AutoencoderKL

        return AutoencoderKL(**config)
    if kind == "ltx_transformer":
        from diffusers import LTXVideoTransformer3DModel

        return LTXVideoTransformer3DModel(**config)
    if kind == "ltx_vae":
        from diffusers import AutoencoderKLLTXVideo

        return AutoencoderKLLTXVideo(**config)
    if kind == "redux_embedder":
        from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder

        return ReduxImageEncoder(**config)
    import transformers

    classes = {
        "clip_text": ("CLIPTextModel", "CLIPTextConfig"),
        "t5_encoder": ("T5EncoderModel", "T5Config"),
        "siglip_vision": ("SiglipVisionModel", "SiglipVisionConfig"),
        "vit_classifier": ("ViTForImageClassification", "ViTConfig"),
    }
    model_cls, config_cls = (getattr(transformers, name) for name in classes[kind])
    return model_cls(config_cls(**config))


# -- activations ------------------------------------------------------------------------------


def transformer_activation_bytes(model: str, width: int, height: int, images: int) -> int:
    if model == "ltx-video":
        return 2 * GIB  # 768x512x121 frames: 6144 tokens x 2048 wide, plus the VAE's temporal tiles
    config = model_configs.FLUX_TRANSFORMER
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    image_tokens = (width // 16) * (height // 16)
    if model == "flux-kontext-dev":
        image_tokens *= 2  # the reference image's tokens join the sequence
    tokens = image_tokens + TEXT_TOKENS.get(model, 512)
    return 16 * tokens * hidden * 2 * images


def vae_activation_bytes(width: int, height: int, images: int) -> int:
    return 4 * width * height * 256 * 2 * images


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
    parts = {name: part for name, part in component_sizes(model).items() if name not in without}
    if lora_slots and "transformer" in parts:  # compiled LoRA models: bf16 slots on every Linear
        t = parts["transformer"]
        extra = lora_slots * lora_rank * t.linear_sides * 2
        parts["transformer"] = ComponentSize(t.bf16 + extra, t.fp8 + extra if t.fp8 is not None else None, t.largest_block, t.linear_sides)
    if safety_checker and model.startswith("flux"):
        parts["safety_checker"] = component_sizes("safety-checker")["classifier"]
    width, height = largest_size(sizes)
    act_t = transformer_activation_bytes(model, width, height, max_images)
    has_transformer = "transformer" in parts
    dtypes = ["bf16"]
    if has_transformer and fp8_supported and parts["transformer"].fp8 is not None:
        dtypes = ["fp8"] if prefer_fp8 else ["bf16", "fp8"]
    candidates = []
    for offload in ("none", "text_encoders", "model", "group"):
        if offload == "text_encoders" and not any(name in parts for name in TEXT_ENCODERS):
            continue
        for dtype in dtypes:
            for decode_batch in sorted({max_images, 1}, reverse=True):
                candidates.append((offload, dtype, decode_batch))
    best: ModelPlan | None = None
    for offload, dtype, decode_batch in candidates:
        plan = _evaluate(model, parts, offload, dtype, decode_batch, act_t, width, height, gpu_memory_bytes)
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
    decode_batch: int,
    act_t: int,
    width: int,
    height: int,
    budget: int,
) -> ModelPlan:
    def size(name: str) -> int:
        part = parts[name]
        return part.fp8 if (name == "transformer" and dtype == "fp8" and part.fp8 is not None) else part.bf16

    act_vae = vae_activation_bytes(width, height, decode_batch) if "vae" in parts else 0
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
        note=OFFLOAD_NOTES[offload],
    )


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
            size("transformer") + act_t if "transformer" in parts else 0,
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
    models: tuple[str, ...] = PLANNED,
    max_images: int = 4,
    sizes: tuple[str, ...] = DEFAULT_SIZES,
    fp8_supported: bool = True,
    prefer_fp8: bool = False,
    lora_slots: int = 0,
    lora_rank: int = 0,
) -> dict[str, Any]:
    """``openfal models plan``: the plan of every model for a card of ``gpu_memory_gib``
    (``lora_slots`` of ``lora_rank`` on the models that serve LoRAs, when compiled)."""
    from openfal.backends.local.plans import LORA_MODELS

    budget = int(gpu_memory_gib * GIB)
    plans = [
        plan_model(
            m, budget, max_images=max_images, sizes=sizes, fp8_supported=fp8_supported, prefer_fp8=prefer_fp8,
            lora_slots=lora_slots if m in LORA_MODELS else 0, lora_rank=lora_rank,
        ).as_json()
        for m in models
    ]  # fmt: skip
    return {
        "gpu_memory_gib": gpu_memory_gib,
        "max_batch_images": max_images,
        "largest_size": "x".join(map(str, largest_size(sizes))),
        "fp8_supported": fp8_supported,
        "models": plans,
    }
