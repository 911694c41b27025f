"""Which device and dtype models run on: ``auto`` means CUDA in bf16 when a GPU is
present, else CPU in fp32 (bf16 matmuls on CPU are slower than fp32 on most CPUs)."""

from __future__ import annotations

import torch

from openfal.errors import ConfigError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"OPENFAL_DEVICE={name!r} is not a torch device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"OPENFAL_DEVICE={name!r} but torch sees no CUDA device")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"OPENFAL_DTYPE={name!r}: use auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]
