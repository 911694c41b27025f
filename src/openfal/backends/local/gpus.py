"""Every GPU of the host: ``--gpus all|0,1,...`` runs one engine per GPU.

Each GPU gets a ``LocalBackend`` of its own (its own engine, model cache, lock and
memory plan), run by a worker of its own that claims from the queue independently and
reports itself to the worker registry as ``{hostname}-gpuN-...``, with the device, its
loaded models and its memory. The ``local`` backend the API uses to compute batch keys
stays as it is; it never loads a model in a process that runs per-GPU workers.
"""

from __future__ import annotations

from openfal.backends.local.backend import LocalBackend
from openfal.config import Settings
from openfal.errors import ConfigError


def resolve_gpus(spec: str) -> list[str]:
    """``""`` -> [] (one engine on ``OPENFAL_DEVICE``); ``all`` -> every CUDA device;
    ``0,1`` -> those devices (each must exist)."""
    text = spec.strip()
    if not text:
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"--gpus {text}: torch sees no CUDA device on this host")
    if text == "all":
        return [f"cuda:{i}" for i in range(count)]
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--gpus {text!r}: use all, or GPU indices such as 0,1") from None
    bad = [i for i in indices if not 0 <= i < count]
    if bad or len(set(indices)) != len(indices):
        raise ConfigError(f"--gpus {text!r}: this host has GPUs 0..{count - 1}, each listed once")
    return [f"cuda:{i}" for i in indices]


def gpu_backends(settings: Settings, template: LocalBackend | None) -> dict[str, LocalBackend]:
    """label (``gpu0``...) -> a local backend on that GPU, with ``template``'s options,
    safety checker, client and media store; {} when ``settings.gpus`` is empty."""
    devices = resolve_gpus(settings.gpus)
    backends: dict[str, LocalBackend] = {}
    for index, device in enumerate(devices):
        label = f"gpu{device.split(':')[1]}" if ":" in device else f"gpu{index}"
        backends[label] = LocalBackend(
            settings,
            options=template.options if template is not None else None,
            safety_checker=template._safety_checker if template is not None else None,
            http_client=template._client if template is not None else None,
            media=template.media if template is not None else None,
            device=device,
            label=label,
            acceleration=template.acceleration if template is not None else None,
        )
    return backends
