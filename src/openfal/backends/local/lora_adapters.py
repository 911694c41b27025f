"""LoRA adapters on the loaded pipelines (FLUX, Qwen-Image, Z-Image), set per call
without reloading the base.

Adapters live on the modules (PEFT injects them into the transformer and the CLIP text
encoder), and pipelines of one model share those modules, so every call states
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
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from openfal.backends.local import lora_bank
from openfal.backends.local.acceleration import MARK as COMPILED
from openfal.backends.local.lora_files import LoraFile, refused

log = logging.getLogger("openfal.local")

#: state-dict prefixes diffusers' loaders consume (CLIP: FLUX only)
TRANSFORMER, CLIP = "transformer.", "text_encoder."
#: converted LoRAs kept in host memory for compiled engines' slot copies
STATES_KEPT = 8
#: LoRAs advertised as runner hints (the most recently applied)
HINTS_KEPT = 32


def adapter_name(lora: LoraFile) -> str:
    return f"lora_{lora.digest[:12]}"


class Adapters:
    """The adapters loaded on one engine's pipelines, by transformer."""

    def __init__(self, *, max_rank: int, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_rank = max_rank
        self.idle_seconds = idle_seconds
        self.clock = clock
        #: id(transformer) -> adapter name -> last use (eager engines)
        self._used: dict[int, dict[str, float]] = {}
        #: digest -> converted state dict, for compiled engines' slot copies (a few kept)
        self._states: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        #: id(transformer) -> the (digest, scale) set its slots hold now
        self._in_slots: dict[int, tuple[tuple[str, float], ...]] = {}
        #: runner hint -> last use, of the LoRAs applied lately
        self._hinted: OrderedDict[str, float] = OrderedDict()

    def apply(self, pipe: Any, loras: Sequence[LoraFile], say: Callable[[str], None]) -> None:
        """Make ``loras`` (and only they, with their scales) active on ``pipe``."""
        bank = lora_bank.bank_of(pipe.transformer)
        if bank is not None:
            self._apply_slots(pipe, bank, loras, say)
        elif loras and getattr(pipe.transformer, COMPILED, None) in ("compile", "fp8"):
            # adding adapters to compiled blocks would recompile them inside requests
            raise refused("loras", "This server's compiled engine reserves no LoRA slots (OPENFAL_LORA_SLOTS=0): LoRAs are not served")
        else:
            self._apply_adapters(pipe, loras, say)
        if loras:
            say("LoRAs applied: " + ", ".join(f"{lora.source} (scale {lora.scale:g})" for lora in loras))
        for lora in loras:
            if lora.hint:
                self._hinted[lora.hint] = self.clock()
                self._hinted.move_to_end(lora.hint)
        while len(self._hinted) > HINTS_KEPT:
            self._hinted.popitem(last=False)

    def hints(self) -> list[str]:
        """The LoRAs applied within ``idle_seconds`` (still loaded, or cheap to load
        again from host memory): what this engine advertises as runner hints."""
        cutoff = self.clock() - self.idle_seconds
        return sorted(hint for hint, used in list(self._hinted.items()) if used >= cutoff)

    # -- eager engines: one PEFT adapter per LoRA, switched with set_adapters ------------------

    def _apply_adapters(self, pipe: Any, loras: Sequence[LoraFile], say: Callable[[str], None]) -> None:
        used = self._used.setdefault(id(pipe.transformer), {})
        self._drop_idle(pipe, used, keep={adapter_name(lora) for lora in loras})
        if not loras:
            if used:
                pipe.disable_lora()
            return
        for index, lora in enumerate(loras):
            name = adapter_name(lora)
            if name not in used:
                started = self.clock()
                state = self._read(pipe, lora, f"loras.{index}.path", say)
                mapped = lora_bank.pairs(pipe.transformer, state)
                check_pairs(pipe.transformer, mapped, lambda _: self.max_rank, f"loras.{index}.path", lora.source)
                clip = {k: v for k, v in state.items() if k.startswith(CLIP)}
                flat = {f"{TRANSFORMER}{path}.lora_{part}.weight": w for path, (a, b) in mapped.items() for part, w in (("A", a), ("B", b))}
                pipe.load_lora_weights({**flat, **clip}, adapter_name=name)
                say(f"LoRA {lora.source} loaded in {self.clock() - started:.2f} s")
            used[name] = self.clock()
        pipe.enable_lora()
        pipe.set_adapters([adapter_name(lora) for lora in loras], adapter_weights=[lora.scale for lora in loras])

    def _drop_idle(self, pipe: Any, used: dict[str, float], keep: set[str]) -> None:
        now = self.clock()
        idle = [name for name, last in used.items() if name not in keep and now - last > self.idle_seconds]
        if idle:
            pipe.delete_adapters(idle)
            for name in idle:
                del used[name]
            log.info("unloaded idle LoRA adapters %s", ", ".join(idle))

    # -- compiled engines: weights copied into fixed slots (see lora_bank) -----------------------

    def _apply_slots(self, pipe: Any, bank: lora_bank.Bank, loras: Sequence[LoraFile], say: Callable[[str], None]) -> None:
        wanted = tuple((lora.digest, lora.scale) for lora in loras)
        lora_bank.set_active(pipe.transformer, bool(loras))  # no LoRA: the variant without adapters
        if not loras or self._in_slots.get(id(pipe.transformer)) == wanted:
            return  # already there: a run of requests with one LoRA set copies once
        filled = []
        for index, lora in enumerate(loras):
            field = f"loras.{index}.path"
            state = self._states.get(lora.digest)
            if state is None:
                state = self._read(pipe, lora, field, say, on_compiled=True)
                self._states[lora.digest] = state
                while len(self._states) > STATES_KEPT:
                    self._states.popitem(last=False)
            self._states.move_to_end(lora.digest)
            mapped = lora_bank.pairs(pipe.transformer, state)
            outside = sorted(p for p in mapped if p not in bank.ranks and lora_bank._has(pipe.transformer, p))
            if outside:
                say(f"LoRA {lora.source}: parts for {len(outside)} layers without LoRA slots skipped ({', '.join(outside[:3])}{', ...' if len(outside) > 3 else ''})")
                mapped = {p: pair for p, pair in mapped.items() if p not in outside}
            check_pairs(pipe.transformer, mapped, lambda path: bank.ranks.get(path, 0), field, lora.source)
            filled.append((mapped, lora.scale))
        slots = lora_bank.pack(bank, [mapped for mapped, _ in filled])
        if slots is None:
            capacity = f"{bank.slots} slot{'s' if bank.slots > 1 else ''} of rank {bank.rank}"
            raise refused("loras", f"These LoRAs together need more rank than this server's {capacity} (OPENFAL_LORA_SLOTS, OPENFAL_LORA_MAX_RANK)")
        self._in_slots.pop(id(pipe.transformer), None)  # a failed copy leaves nothing trusted
        lora_bank.load(pipe.transformer, filled, slots)
        self._in_slots[id(pipe.transformer)] = wanted

    def _read(self, pipe: Any, lora: LoraFile, field: str, say: Callable[[str], None], *, on_compiled: bool = False) -> dict[str, torch.Tensor]:
        """The LoRA as diffusers' loader for the pipeline converts it, with what openfal cannot apply
        dropped (and said)."""
        try:
            read = _state_alphas_metadata(pipe, lora)
        except Exception as exc:  # diffusers' converters raise anything on a foreign layout
            raise refused(field, f"{lora.source} is not a LoRA diffusers can read for this model: {type(exc).__name__}: {exc}") from None
        state, alphas, metadata = read
        state = fold_alphas(state, alphas, metadata)
        kept = (TRANSFORMER,) if on_compiled else (TRANSFORMER, CLIP)
        skipped = sorted({key.split(".", 1)[0] for key in state if not key.startswith(kept)})
        if skipped:
            where = " on a compiled engine" if on_compiled else ""
            say(f"LoRA {lora.source}: parts for {', '.join(skipped)} skipped (not supported{where}; the transformer parts are applied)")
        return {k: v for k, v in state.items() if k.startswith(kept)}

    def loaded(self, pipe: Any) -> list[str]:
        return sorted(self._used.get(id(pipe.transformer), {}))


def _state_alphas_metadata(pipe: Any, lora: LoraFile) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any] | None]:
    """The converted state dict, the ``.alpha`` values and the adapter metadata, asking
    the pipeline's loader for as much of that as its ``lora_state_dict`` returns (FLUX's
    returns all three; some families' loaders know no ``return_alphas``)."""
    import inspect

    accepted = inspect.signature(pipe.lora_state_dict).parameters
    kwargs = {name: True for name in ("return_alphas", "return_lora_metadata") if name in accepted}
    read = pipe.lora_state_dict(str(lora.file), **kwargs)
    if not isinstance(read, tuple):
        return read, None, None
    state, rest = read[0], list(read[1:])
    alphas = rest.pop(0) if "return_alphas" in kwargs and rest else None
    metadata = rest.pop(0) if "return_lora_metadata" in kwargs and rest else None
    return state, alphas, metadata


def fold_alphas(state: dict[str, torch.Tensor], alphas: dict[str, Any] | None, metadata: dict[str, Any] | None) -> dict[str, torch.Tensor]:
    """``state`` with each layer's ``alpha / rank`` folded into its ``lora_B``, as PEFT
    scales it: diffusers-format ``.alpha`` keys, and PEFT's ``lora_alpha`` (with
    ``alpha_pattern``/``rank_pattern``) from the file's adapter metadata. Kohya and
    XLabs LoRAs come back with the alpha already folded (no alphas, no metadata)."""
    out = dict(state)
    for key, alpha in (alphas or {}).items():
        path = key.removesuffix(".alpha")
        down, up_key = out.get(f"{path}.lora_A.weight"), f"{path}.lora_B.weight"
        if down is not None and up_key in out:
            out[up_key] = out[up_key] * (float(alpha) / down.shape[0])
    config: dict[str, Any] = {}
    if isinstance(metadata, dict):
        nested = metadata.get("transformer")
        config = nested if isinstance(nested, dict) else {k.split(".", 1)[1]: v for k, v in metadata.items() if k.startswith(TRANSFORMER)}
    if "lora_alpha" not in config or alphas:
        return out
    alpha_pattern, rank_pattern = config.get("alpha_pattern") or {}, config.get("rank_pattern") or {}
    for key in [k for k in out if k.startswith(TRANSFORMER) and ".lora_A." in k]:
        path = key[len(TRANSFORMER) : key.index(".lora_A.")]
        alpha = next((v for pattern, v in alpha_pattern.items() if path == pattern or path.endswith(f".{pattern}")), config["lora_alpha"])
        rank = next((v for pattern, v in rank_pattern.items() if path == pattern or path.endswith(f".{pattern}")), config.get("r", out[key].shape[0]))
        up_key = key.replace(".lora_A.", ".lora_B.")
        if up_key in out and rank:
            out[up_key] = out[up_key] * (float(alpha) / float(rank))
    return out


def check_pairs(
    transformer: torch.nn.Module,
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]],
    max_rank: Callable[[str], int],
    field: str,
    source: str,
) -> None:
    """Refuse a LoRA that would not change this transformer as it claims: no
    transformer weights at all, layers it does not have, shapes that do not fit those
    layers, or a rank above what is served."""
    if not pairs:
        raise refused(field, f"{source} holds no LoRA weights for this model's transformer (wrong model family or not a LoRA)")
    for path, (down, up) in pairs.items():
        try:
            layer = transformer.get_submodule(path)
        except AttributeError:
            raise refused(field, f"{source} targets {path!r}, which this model's transformer does not have (a LoRA for another model family?)") from None
        base = getattr(layer, "base_layer", layer)
        fan_in, fan_out = getattr(base, "in_features", None), getattr(base, "out_features", None)
        if down.ndim != 2 or up.ndim != 2 or down.shape[1] != fan_in or up.shape[0] != fan_out or up.shape[1] != down.shape[0]:
            shapes = f"{tuple(down.shape)} / {tuple(up.shape)}"
            raise refused(field, f"{source}: the weights for {path!r} ({shapes}) do not fit its {fan_in}->{fan_out} layer")
        if down.shape[0] > max_rank(path):
            raise refused(
                field, f"{source} has rank {down.shape[0]} at {path!r}; this server serves LoRAs up to rank {max_rank(path)} (OPENFAL_LORA_MAX_RANK)"
            )
