"""The attention backend, chosen by measurement at load.

On Hopper there is no FlashAttention-3 wheel for the GPU image's torch, FA2
(``flash_attn``) is the same kernel family as torch's own flash SDPA, and torch's SDPA
priority order puts its FA2 kernel first and cuDNN last; cuDNN's fused attention is
often the fastest there. So ``auto`` measures: each candidate diffusers can dispatch to
(FA3 when ``flash_attn_interface`` imports, cuDNN, torch's flash and memory-efficient
kernels) runs the transformer's own attention shape (its heads and head size, the
tokens of a 1024x1024 image plus 512 text tokens) a few times; a candidate whose output
differs from the math reference, or that fails, is dropped; the fastest wins and the
choice, with every candidate's time, is logged.
"""

from __future__ import annotations

import importlib.util
import logging
import statistics
from typing import Any

import torch

log = logging.getLogger("openfal.local")

#: diffusers backend name -> the package it needs (None: built into torch)
CANDIDATES: tuple[tuple[str, str | None], ...] = (
    ("_flash_3", "flash_attn_interface"),
    ("_native_cudnn", None),
    ("_native_flash", None),
    ("_native_efficient", None),
)
#: tokens measured: a 1024x1024 image (4096) plus 512 text tokens
TOKENS = 4096 + 512


def choose(transformer: torch.nn.Module, *, tokens: int = TOKENS, repeats: int = 5) -> tuple[str | None, str]:
    """(the fastest backend for ``transformer`` on its device, a log line); (None, ...)
    on CPU or when nothing beats torch's default dispatch."""
    parameter = next(transformer.parameters())
    if not parameter.is_cuda:
        return None, "attention: torch SDPA (not on CUDA: nothing to measure)"
    config = getattr(transformer, "config", None)
    heads = int(getattr(config, "num_attention_heads", 24))
    head_dim = int(getattr(config, "attention_head_dim", 128))
    timings: dict[str, float] = {}
    failures: dict[str, str] = {}
    q, k, v = (torch.randn(1, tokens, heads, head_dim, device=parameter.device, dtype=torch.bfloat16) for _ in range(3))
    reference = _run(None, q, k, v)
    for name, package in CANDIDATES:
        if package is not None and importlib.util.find_spec(package) is None:
            continue
        try:
            out = _run(name, q, k, v)
            error = (out.float() - reference.float()).abs().max().item()
            if not error < 0.05:
                failures[name] = f"max error {error:.3g}"
                continue
            timings[name] = _time(lambda n=name: _run(n, q, k, v), repeats)
        except Exception as exc:  # a kernel this GPU, torch or shape does not support
            failures[name] = f"{type(exc).__name__}"
    timings["native"] = _time(lambda: _run(None, q, k, v), repeats)
    best = min(timings, key=timings.__getitem__)
    measured = ", ".join(f"{n} {t * 1000:.2f} ms" for n, t in sorted(timings.items(), key=lambda kv: kv[1]))
    refused = "".join(f"; {n} not used ({why})" for n, why in failures.items())
    line = f"attention: {best} chosen by measurement ({heads}x{head_dim}, {tokens} tokens: {measured}{refused})"
    log.info(line)
    return (None if best == "native" else best), line


def _run(backend: str | None, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    with torch.no_grad():
        if backend is None:
            return dispatch_attention_fn(q, k, v)
        return dispatch_attention_fn(q, k, v, backend=backend)


def _time(run: Any, repeats: int) -> float:
    run()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1000)
    return statistics.median(samples)
