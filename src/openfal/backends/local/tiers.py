"""fal's ``acceleration`` input (``none`` | ``regular`` | ``high``), for every endpoint
that has it and every family, applied around the pipeline call by the engine.

* ``none``: no lossy step the request can turn off: no step cache. The transformer runs
  as the server's profile prepared it (compiled graphs are exact up to float rounding;
  an ``OPENFAL_ACCELERATION=fp8`` server keeps float8 weights for every tier, and the
  request's log says so: an operator who needs bit-faithful ``none`` runs ``compile``).
* ``regular``: the server's lossless compiled path (with float8 weights on an fp8
  server). The same graphs as ``none``; the two differ only in what fal promises.
* ``high``: ``regular`` plus diffusers' own First Block Cache
  (``diffusers.hooks.FirstBlockCacheConfig``): at each step the first transformer block
  runs; when its output residual changed by less than ``threshold`` (relative mean
  absolute difference to the previous step's) the remaining blocks are skipped and
  their cached residual is reused. Lossy. The threshold defaults to 0.12
  (``OPENFAL_ACCELERATION_HIGH_THRESHOLD``): ParaAttention's FLUX.1-dev measurements put
  0.08 at about 1.6x and 0.12 at about 2x fewer block evaluations with small visual
  change; diffusers' example uses 0.2. The compiled blocks stay compiled: the cache
  wraps their compiled ``forward`` and decides outside the graph.

Operators cap the tier per endpoint (``OPENFAL_ACCELERATION_CAPS``, endpoint pattern ->
highest tier): a request above its cap runs at the cap, and its log says so. The tier
used is in the request's log and in its result's ``timings`` (``acceleration_<tier>``:
the inference seconds at that tier; ``cached_steps`` under ``high``).
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

TIERS = ("none", "regular", "high")
#: how each engine profile runs the transformer, for the tier's log line
PROFILES = {
    "off": "transformer uncompiled (OPENFAL_ACCELERATION=off)",
    "compile": "transformer compiled, bf16 weights (lossless)",
    "fp8": "transformer compiled, float8 weights (this server's OPENFAL_ACCELERATION=fp8, for every tier)",
}
DEFAULT_HIGH_THRESHOLD = 0.12


def capped(endpoint_id: str, tier: str, caps: Mapping[str, str]) -> str:
    """``tier``, lowered to the first cap whose pattern matches ``endpoint_id``."""
    if tier not in TIERS:
        return tier
    for pattern, cap in caps.items():
        if cap in TIERS and fnmatch.fnmatchcase(endpoint_id, pattern) and TIERS.index(tier) > TIERS.index(cap):
            return cap
    return tier


@dataclass
class TierRun:
    """What a call ran with: the tier, and under ``high`` how many transformer calls
    there were and how many reused the cached blocks."""

    tier: str
    calls: int = 0
    cached: int = 0

    def timings(self, seconds: float) -> dict[str, float]:
        if not self.tier:
            return {}
        out = {f"acceleration_{self.tier}": round(seconds, 4)}
        if self.tier == "high":
            out["cached_steps"] = float(self.cached)
        return out


@contextlib.contextmanager
def applied(pipe: Any, tier: str, *, threshold: float, profile: str, say: Callable[[str], None]) -> Iterator[TierRun]:
    """Run the pipeline call inside this at ``tier`` ('' for an endpoint without the
    field: nothing is done or said)."""
    run = TierRun(tier)
    transformer: Any = getattr(pipe, "transformer", None)
    if tier in ("none", "regular"):
        say(f"acceleration {tier}: no step cache; {PROFILES.get(profile, profile)}")
    if tier != "high":
        yield run
        return
    tail = _tail_block(transformer)
    if tail is None or not hasattr(transformer, "enable_cache"):
        run.tier = "regular"
        say("acceleration high: this model has no step cache in diffusers; it runs as regular")
        yield run
        return
    from diffusers.hooks import FirstBlockCacheConfig

    own = "forward" in vars(tail)
    original = tail.forward
    computed = [0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        computed[0] += 1
        return original(*args, **kwargs)

    def count_call(*_: Any) -> None:
        run.calls += 1

    tail.forward = counted
    handle = transformer.register_forward_pre_hook(count_call)
    transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        yield run
    finally:
        transformer.disable_cache()
        handle.remove()
        if own:
            tail.forward = original
        else:
            del tail.forward
        run.cached = max(0, run.calls - computed[0])
        say(
            f"acceleration high: first-block cache (threshold {threshold:g}, lossy) reused the cached blocks "
            f"on {run.cached} of {run.calls} transformer calls"
        )


def _tail_block(transformer: Any) -> Any:
    """The block diffusers' First Block Cache treats as the tail (the last block of the
    last block list), or None when the transformer has none it knows."""
    if transformer is None:
        return None
    import torch
    from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS

    blocks = [
        block
        for name, child in transformer.named_children()
        if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, torch.nn.ModuleList)
        for block in child
    ]
    return blocks[-1] if len(blocks) >= 2 else None
