"""Putting a freshly loaded pipeline where its memory plan says, accelerated.

The order matters: Q/K/V fusion concatenates bf16 weights, so it runs before float8
quantisation; quantisation moves the transformer onto the GPU layer by layer, so a
24 GiB card never holds its 22 GiB bf16 copy; compilation comes last, once every
weight is where it will run. Under model or group offload nothing is compiled (the
hooks move weights between calls, which compiled graphs do not expect).
"""

from __future__ import annotations

import logging
from typing import Any, cast

import torch

from openfal.backends.local import acceleration as accel
from openfal.backends.local import lora_bank
from openfal.backends.local.memory_plan import TEXT_ENCODERS, ModelPlan

log = logging.getLogger("openfal.local")


def place(
    pipe: Any,
    device: torch.device,
    plan: ModelPlan | None,
    acceleration: accel.Acceleration,
    *,
    accelerated: bool = True,
    lora_slots: int = 0,
    lora_rank: int = 0,
    lora_targets: tuple[str, ...] = (),
    blocks: tuple[str, ...] = (),
) -> list[str]:
    """Move ``pipe`` onto ``device`` per ``plan`` (None: all resident) and apply the
    acceleration profile when its family is ``accelerated``; the steps taken, for the
    log. A compiled model that serves LoRAs gets its LoRA slots before it compiles
    (lora_bank.py)."""
    flux = accelerated and getattr(pipe, "transformer", None) is not None
    steps: list[str] = []
    offload = plan.offload if plan is not None else "none"
    # the plan's dtype; without a plan (CPU), the profile's
    fp8 = plan.transformer_dtype == "float8_e4m3fn" if plan is not None else acceleration.profile == "fp8"
    if flux and (acceleration.compiles or fp8):
        steps += accel.fuse(pipe.transformer)
    if flux and fp8:
        steps += accel.quantize(pipe.transformer, acceleration.quantization or accel.fp8_config, device)
    if plan is not None and plan.text_encoder_dtype == "float8_e4m3fn":
        steps += quantize_text_encoders(pipe, acceleration, device)
    if offload == "none":
        pipe.to(device)
    elif offload == "text_encoders":
        steps += offload_text_encoders(pipe, device)
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)
        steps.append("model offload (components visit the GPU in turn)")
    else:
        steps += group_offload(pipe, device)
    if flux and acceleration.compiles:
        if offload in ("none", "text_encoders"):
            steps += lora_bank.install(pipe.transformer, slots=lora_slots, rank=lora_rank, targets=lora_targets, blocks=blocks)
            steps += accel.compile_pipeline(pipe, acceleration, blocks)
        else:
            steps.append(f"not compiled: {offload} offload moves weights between calls")
    vae = getattr(pipe, "vae", None)
    if plan is not None and vae is not None and plan.vae_decode_batch == 1 and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
        steps.append("VAE decodes one image at a time")
    if plan is not None:
        steps.insert(0, f"memory plan: {plan.offload} offload, transformer {plan.transformer_dtype}, peak {plan.resident_gib} GiB")
    return steps


def quantize_text_encoders(pipe: Any, acceleration: accel.Acceleration, device: torch.device) -> list[str]:
    """The text encoders' Linear weights in float8 (or the profile's stand-in), layer by
    layer onto ``device``: they stay resident at half their bf16 size and encode each
    prompt on the GPU."""
    steps: list[str] = []
    for name in TEXT_ENCODERS:
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            done = accel.quantize(module, acceleration.quantization or accel.fp8_config, device)
            steps += [f"{name}: {step}" for step in done]
    return steps


def offload_text_encoders(pipe: Any, device: torch.device) -> list[str]:
    """Everything on ``device`` but T5 and CLIP, which wait in host memory: each moves
    to the device when called and all go back before the transformer runs."""
    texts = [m for name in TEXT_ENCODERS if isinstance(m := getattr(pipe, name, None), torch.nn.Module)]
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module) and name not in TEXT_ENCODERS:
            module.to(device)
    for module in texts:
        module.to("cpu")
        if not getattr(module, "_openfal_visits", False):  # shared encoders are hooked once
            module.register_forward_pre_hook(lambda mod, args, kwargs, d=device: _visit(mod, d, args, kwargs), with_kwargs=True)
            module._openfal_visits = True  # type: ignore[assignment]
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None and texts:
        transformer.register_forward_pre_hook(lambda mod, args, t=texts: _send_home(t))
    return [f"{len(texts)} text encoders offloaded after encoding"]


def _visit(module: torch.nn.Module, device: torch.device, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Bring the encoder to ``device``, and its inputs: a pipeline that places them on
    the encoder's own device between calls (Wan's ``get_module_execution_device``) put
    them in host memory."""
    if next(module.parameters()).device != device:
        module.to(device)
    return tuple(_on(a, device) for a in args), {k: _on(v, device) for k, v in kwargs.items()}


def _on(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _send_home(modules: list[torch.nn.Module]) -> None:
    moved = False
    for module in modules:
        if next(module.parameters()).device.type != "cpu":
            module.to("cpu")
            moved = True
    if moved and torch.cuda.is_available():
        torch.cuda.empty_cache()


def group_offload(pipe: Any, device: torch.device) -> list[str]:
    """diffusers' block-level group offload for every model component (streams on CUDA)."""
    from diffusers.hooks import apply_group_offloading

    stream = device.type == "cuda"
    for name, module in pipe.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        if hasattr(module, "enable_group_offload"):  # diffusers' models: a method torch's stubs do not know
            cast(Any, module).enable_group_offload(onload_device=device, offload_type="block_level", num_blocks_per_group=1, use_stream=stream)
        else:
            apply_group_offloading(module, onload_device=device, offload_type="block_level", num_blocks_per_group=1, use_stream=stream)
        log.debug("group offload on %s", name)
    return ["group offload (block level)"]
