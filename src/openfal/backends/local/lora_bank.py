"""LoRA slots for compiled engines: adapters hot-swapped by copying weights, never by
changing the graph.

A compiled transformer recompiles whenever its modules change, and adding or removing
a PEFT adapter changes them. So before a compiled engine compiles a model that serves
LoRA endpoints, the Linear layers LoRAs of its family really target
(``Family.lora_targets``, inside its repeated blocks: not the embedders or the final
projection) get ``OPENFAL_LORA_SLOTS`` adapters of rank ``OPENFAL_LORA_MAX_RANK``
(alpha = rank, so PEFT's scaling is 1), all zero.

Slots cost nothing for a request without a LoRA: the engine switches the adapters off
for it (``set_active``), PEFT's per-layer ``_disable_adapters`` flag is a guard of the
compiled blocks, and warm-up compiles both variants. A request without a LoRA runs the
graph that has no adapter branch at all (no extra reads of the input, no full-width
adapter output, no add); one with LoRAs runs the other, and neither recompiles. A request's LoRAs are then *copied* into the slots: ``A`` into
rows, ``B`` (times the request's scale) into the matching columns, zeros elsewhere;
several LoRAs share a slot while their ranks add up within it (``pack``). The
graph never changes, so a swap costs a copy and no compile (diffusers' ``hotswap=True``
does the same for one adapter; slots extend it to several per request).

The engine's fused Q/K/V projections (``to_qkv``, ``to_added_qkv``) have no ``to_q``
for a LoRA to target: the parts a LoRA has for ``to_q``/``to_k``/``to_v`` are stacked
into one exact LoRA of the fused layer (``A`` rows concatenated, ``B`` block-diagonal),
so fused layers get three times the rank.

The price is memory (``slot_parameters``), and compute for requests with LoRAs only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger("openfal.local")

ATTR = "_openfal_lora_bank"
#: the unfused projections a fused layer holds, in its output order
FUSED = {"to_qkv": ("to_q", "to_k", "to_v"), "to_added_qkv": ("add_q_proj", "add_k_proj", "add_v_proj")}


@dataclass(frozen=True, slots=True)
class Bank:
    slots: int
    rank: int
    #: module path -> its slot rank (fused layers: 3 x rank)
    ranks: Mapping[str, int]

    @property
    def names(self) -> list[str]:
        return [f"slot{i}" for i in range(self.slots)]


def bank_of(transformer: torch.nn.Module) -> Bank | None:
    return getattr(transformer, ATTR, None)


def targeted(transformer: torch.nn.Module, targets: Sequence[str], blocks: Sequence[str]) -> list[str]:
    """The Linear layers of ``transformer`` a slot goes on: those whose name ends with one
    of ``targets`` (a target on an unfused q/k/v also names the fused layer that replaced
    it), inside the ``blocks`` ModuleLists when any are given; every Linear when no
    target is declared."""
    fused_of = {part: fused for fused, parts in FUSED.items() for part in parts}
    suffixes = set(targets) | {fused_of[t.rsplit(".", 1)[-1]] for t in targets if t.rsplit(".", 1)[-1] in fused_of}
    names = []
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if blocks and not any(name.startswith(f"{block}.") for block in blocks):
            continue
        if suffixes and not any(name == s or name.endswith(f".{s}") for s in suffixes):
            continue
        names.append(name)
    return names


def slot_parameters(transformer: torch.nn.Module, *, rank: int, targets: Sequence[str], blocks: Sequence[str], fused: bool = True) -> int:
    """Parameters one slot of ``rank`` adds to ``transformer`` (built on ``meta`` is
    enough) once its Q/K/V are fused (``fused``): a fused layer holds three times the
    rank over three times the outputs."""
    total = 0
    seen_fused: set[str] = set()
    for name in targeted(transformer, targets, blocks):
        layer: Any = transformer.get_submodule(name)  # a Linear: in_features and out_features are ints
        parent, _, leaf = name.rpartition(".")
        group = next((f for f, parts in FUSED.items() if leaf in parts), None)
        if fused and group is not None:
            if f"{parent}.{group}" in seen_fused:
                continue
            seen_fused.add(f"{parent}.{group}")
            total += 3 * rank * layer.in_features + 3 * layer.out_features * 3 * rank
        elif leaf in FUSED:
            total += 3 * rank * (layer.in_features + layer.out_features)
        else:
            total += rank * (layer.in_features + layer.out_features)
    return total


def install(
    transformer: torch.nn.Module, *, slots: int, rank: int, targets: Sequence[str] = (), blocks: Sequence[str] = ()
) -> list[str]:
    """Give the targeted Linear layers of ``transformer`` ``slots`` zeroed adapters
    (before compiling), switched off until a request brings LoRAs."""
    if slots <= 0 or bank_of(transformer) is not None:
        return []
    from peft import LoraConfig

    linears = targeted(transformer, targets, blocks)
    fused = {name: 3 * rank for name in linears if name.rsplit(".", 1)[-1] in FUSED}
    pattern = {f"^{name}$": r for name, r in fused.items()}
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=linears, rank_pattern=pattern, alpha_pattern=pattern, lora_dropout=0.0)
    bank = Bank(slots, rank, {name: fused.get(name, rank) for name in linears})
    for slot in bank.names:
        transformer.add_adapter(config, adapter_name=slot)  # type: ignore[operator]
    transformer.set_adapters(bank.names, weights=[1.0] * slots)  # type: ignore[operator]
    _zero(transformer, bank.names)
    for name, parameter in transformer.named_parameters():
        if "lora_" in name:
            parameter.requires_grad_(False)  # never trained here; one value for the graphs' guards
    setattr(transformer, ATTR, bank)
    set_active(transformer, False)
    return [f"{slots} LoRA slots of rank {rank} on {len(linears)} targeted Linear layers (hot-swapped by copy; off for requests without LoRAs)"]


def set_active(transformer: torch.nn.Module, active: bool) -> None:
    """Switch the slots on (a request with LoRAs) or off (one without: the compiled
    variant with no adapter branch runs). A no-op when already so."""
    if getattr(transformer, ACTIVE, None) is active:
        return
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            # the flag PEFT's forward reads; set directly, since ``enable_adapters`` also
            # flips the adapters' requires_grad, another guard of the compiled graphs
            module._disable_adapters = not active
    setattr(transformer, ACTIVE, active)


def is_active(transformer: torch.nn.Module) -> bool:
    return bool(getattr(transformer, ACTIVE, False))


ACTIVE = "_openfal_slots_active"


Pairs = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


def pack(bank: Bank, loras: Sequence[Pairs]) -> list[int] | None:
    """The slot each LoRA goes to, or None when they do not fit. A slot holds several
    LoRAs side by side (``B1 A1 + B2 A2`` is one LoRA of rank ``r1 + r2`` with ``A``s
    stacked and ``B``s concatenated), so the limit is the rank each layer has left."""
    used = [dict.fromkeys(bank.ranks, 0) for _ in range(bank.slots)]
    placed = []
    for mapped in loras:
        for slot, left in enumerate(used):
            if all(left[path] + down.shape[0] <= bank.ranks[path] for path, (down, _) in mapped.items()):
                for path, (down, _) in mapped.items():
                    left[path] += down.shape[0]
                placed.append(slot)
                break
        else:
            return None
    return placed


def load(transformer: torch.nn.Module, loras: Sequence[tuple[Pairs, float]], slots: Sequence[int]) -> None:
    """Copy ``loras`` ((``pairs`` of a LoRA, scale) each) into the slots ``pack`` chose;
    every slot and layer they do not fill is zeroed. The caller checked the pairs."""
    bank = bank_of(transformer)
    assert bank is not None
    _zero(transformer, bank.names)
    offsets: dict[tuple[int, str], int] = {}
    for (mapped, scale), slot in zip(loras, slots, strict=True):
        name = bank.names[slot]
        for module_path, (down, up) in mapped.items():
            layer = transformer.get_submodule(module_path)
            start = offsets.get((slot, module_path), 0)
            end = start + down.shape[0]
            layer.lora_A[name].weight.data[start:end].copy_(down)  # type: ignore[index,union-attr]
            layer.lora_B[name].weight.data[:, start:end].copy_(up * scale)  # type: ignore[index,union-attr]
            offsets[(slot, module_path)] = end


def pairs(transformer: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module path -> (A, B) for ``transformer`` as it is: the parts for unfused Q/K/V
    are stacked onto the fused layer where the transformer has only that."""
    result: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    groups: dict[str, list[tuple[torch.Tensor, torch.Tensor] | None]] = {}
    for key, down in state.items():
        if not key.startswith("transformer.") or ".lora_A." not in key:
            continue
        path = key[len("transformer.") : key.index(".lora_A.")]
        pair = (down, state[key.replace(".lora_A.", ".lora_B.")])
        parent, _, leaf = path.rpartition(".")
        fused = next((name for name, parts in FUSED.items() if leaf in parts), None)
        if fused is not None and not _has(transformer, path) and _has(transformer, f"{parent}.{fused}"):
            groups.setdefault(f"{parent}.{fused}", [None, None, None])[FUSED[fused].index(leaf)] = pair
        else:
            result[path] = pair
    for fused_path, parts in groups.items():
        result[fused_path] = stack(transformer.get_submodule(fused_path), parts)
    return result


def stack(fused: torch.nn.Module, parts: Sequence[tuple[torch.Tensor, torch.Tensor] | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """One LoRA for a fused [q; k; v] layer equal to separate ones on q, k and v."""
    base: Any = getattr(fused, "base_layer", fused)  # a PEFT-wrapped layer keeps the Linear inside
    out = base.out_features // len(parts)
    present = [p for p in parts if p is not None]
    ref = present[0][0]
    downs = [p[0] if p is not None else ref.new_zeros((0, base.in_features)) for p in parts]
    total = sum(d.shape[0] for d in downs)
    up = ref.new_zeros((base.out_features, total))
    column = 0
    for index, (part, down) in enumerate(zip(parts, downs, strict=True)):
        if part is not None:
            up[index * out : (index + 1) * out, column : column + down.shape[0]] = part[1]
        column += down.shape[0]
    return torch.cat(downs, dim=0), up


def _has(module: torch.nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def _zero(transformer: torch.nn.Module, slots: Sequence[str]) -> None:
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_" in name and any(f".{slot}." in name for slot in slots):
                parameter.zero_()
