"""LoRA adapters on the loaded FLUX pipelines, set per call without reloading the base.

Adapters live on the modules (PEFT injects them into the transformer and the CLIP text
encoder), and pipelines of one model share those modules, so every FLUX call states
its adapter set here first: a request without LoRAs disables whatever an earlier one
loaded. Runs are serialised by the engine's lock, so the set cannot change mid-call.

An adapter is named by the file's digest (``lora_<12 hex>``): a LoRA is loaded once per
transformer whatever URL brought it. It is checked before it is loaded: its keys, once
diffusers has converted them (kohya ``lora_unet_...``, XLabs and BFL control layouts
become diffusers' own), must name Linear layers of this transformer with matching
shapes and a rank within ``lora_max_rank``; anything else is refused (422) instead of
silently doing nothing. T5 parts are skipped with a log line (diffusers loads LoRA into
the CLIP encoder only). Adapters unused for ``lora_idle_seconds`` are deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from openfal.backends.local.lora_files import LoraFile, refused

log = logging.getLogger("openfal.local")

#: state-dict prefixes diffusers' FLUX loader consumes
TRANSFORMER, CLIP = "transformer.", "text_encoder."


def adapter_name(lora: LoraFile) -> str:
    return f"lora_{lora.digest[:12]}"


class Adapters:
    """The adapters loaded on one engine's pipelines, by transformer."""

    def __init__(self, *, max_rank: int, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_rank = max_rank
        self.idle_seconds = idle_seconds
        self.clock = clock
        #: id(transformer) -> adapter name -> last use
        self._used: dict[int, dict[str, float]] = {}

    def apply(self, pipe: Any, loras: Sequence[LoraFile], say: Callable[[str], None]) -> None:
        """Make ``loras`` (and only they, with their scales) active on ``pipe``."""
        transformer = pipe.transformer
        used = self._used.setdefault(id(transformer), {})
        self._drop_idle(pipe, used, keep={adapter_name(lora) for lora in loras})
        if not loras:
            if used:
                pipe.disable_lora()
            return
        for index, lora in enumerate(loras):
            name = adapter_name(lora)
            if name not in used:
                self._load(pipe, lora, name, f"loras.{index}.path", say)
            used[name] = self.clock()
        pipe.enable_lora()
        pipe.set_adapters([adapter_name(lora) for lora in loras], adapter_weights=[lora.scale for lora in loras])
        say("LoRAs applied: " + ", ".join(f"{lora.source} (scale {lora.scale:g})" for lora in loras))

    def _load(self, pipe: Any, lora: LoraFile, name: str, field: str, say: Callable[[str], None]) -> None:
        started = self.clock()
        try:
            state = pipe.lora_state_dict(str(lora.file))
        except Exception as exc:  # diffusers' converters raise anything on a foreign layout
            raise refused(field, f"{lora.source} is not a FLUX LoRA diffusers can read: {type(exc).__name__}: {exc}") from None
        state = state[0] if isinstance(state, tuple) else state
        skipped = sorted({key.split(".", 1)[0] for key in state if not key.startswith((TRANSFORMER, CLIP))})
        state = {k: v for k, v in state.items() if k.startswith((TRANSFORMER, CLIP))}
        check_state(pipe.transformer, state, self.max_rank, field, lora.source)
        if skipped:
            say(f"LoRA {lora.source}: parts for {', '.join(skipped)} skipped (not supported; the transformer and CLIP parts are applied)")
        pipe.load_lora_weights(state, adapter_name=name)
        say(f"LoRA {lora.source} loaded in {self.clock() - started:.2f} s")

    def _drop_idle(self, pipe: Any, used: dict[str, float], keep: set[str]) -> None:
        now = self.clock()
        idle = [name for name, last in used.items() if name not in keep and now - last > self.idle_seconds]
        if idle:
            pipe.delete_adapters(idle)
            for name in idle:
                del used[name]
            log.info("unloaded idle LoRA adapters %s", ", ".join(idle))

    def loaded(self, pipe: Any) -> list[str]:
        return sorted(self._used.get(id(pipe.transformer), {}))


def check_state(transformer: torch.nn.Module, state: dict[str, torch.Tensor], max_rank: int, field: str, source: str) -> None:
    """Refuse a state dict that would not change this FLUX transformer as it claims:
    no transformer keys at all, keys naming layers it does not have, shapes that do not
    fit those layers, or a rank above the served maximum."""
    parts = [key for key in state if key.startswith(TRANSFORMER) and ".lora_A." in key]
    if not parts:
        raise refused(field, f"{source} holds no LoRA weights for the FLUX transformer (wrong model family or not a LoRA)")
    for key in parts:
        module_path = key[len(TRANSFORMER) : key.index(".lora_A.")]
        down, up = state[key], state.get(key.replace(".lora_A.", ".lora_B."))
        try:
            layer = transformer.get_submodule(module_path)
        except AttributeError:
            raise refused(field, f"{source} targets {module_path!r}, which this FLUX transformer does not have") from None
        in_features, out_features = getattr(layer, "in_features", None), getattr(layer, "out_features", None)
        if up is None or down.ndim != 2 or up.ndim != 2 or down.shape[1] != in_features or up.shape[0] != out_features or up.shape[1] != down.shape[0]:
            shapes = f"{tuple(down.shape)} / {tuple(up.shape) if up is not None else None}"
            raise refused(field, f"{source}: the weights for {module_path!r} ({shapes}) do not fit its {in_features}->{out_features} layer")
        if down.shape[0] > max_rank:
            raise refused(field, f"{source} has rank {down.shape[0]}; this server serves LoRAs up to rank {max_rank} (OPENFAL_LORA_MAX_RANK)")
