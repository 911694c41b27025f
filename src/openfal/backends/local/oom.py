"""Out of device memory is an answer, not a crash.

A CUDA out-of-memory error anywhere on the device path (a pipeline call, moving weights
onto the device, copying a LoRA into its slots, a warm-up call, the safety check) ends
that request ``503 runner_scheduling_failure``, the error fal gives when no runner could
take a request, after freeing what the failed call held.

Freeing needs care. The ``OutOfMemoryError``'s traceback references every frame of the
failed call, and with them its latents, activations or half-placed pipeline. Keeping
the exception (or raising the 503 from a frame whose locals still hold it, which chains
it as ``__context__``) keeps all of that allocated for as long as the 503 object lives:
the next request then runs out of memory too. So ``guard`` keeps only the message,
clears the traceback's frames, drops the exception, and only then releases memory and
raises the 503 ``from None``.
"""

from __future__ import annotations

import gc
import logging
import traceback
from collections.abc import Callable
from typing import TypeVar

import torch

from openfal.errors import DeviceOutOfMemory

log = logging.getLogger("openfal.local")
T = TypeVar("T")


def release_memory(device: torch.device) -> None:
    """Collect garbage and hand this device's cached blocks back to the driver (only
    this device's: ``empty_cache`` acts on the current device)."""
    gc.collect()
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()


def guard(device: torch.device, what: str, run: Callable[[], T], *, cleanup: Callable[[], None] | None = None) -> T:
    """``run()``, or ``DeviceOutOfMemory`` (503) when it runs out of device memory,
    raised once nothing of the failed call is referenced any more. ``cleanup`` runs
    before memory is released (drop what the caller holds of the failed call)."""
    message: str | None = None
    try:
        return run()
    except torch.OutOfMemoryError as exc:
        message = str(exc).splitlines()[0] if str(exc) else "out of memory"
        traceback.clear_frames(exc.__traceback__)
        exc.__traceback__ = None
        del exc
    if cleanup is not None:
        cleanup()
    raise out_of_memory(device, what, message) from None


def out_of_memory(device: torch.device, what: str, message: str) -> DeviceOutOfMemory:
    """The error to raise for an OOM during ``what``; call it once the failed call's
    exception and frames are gone (``guard`` does)."""
    release_memory(device)
    free = ""
    if device.type == "cuda":
        available, total = torch.cuda.mem_get_info(device)
        free = f" ({available / 2**30:.1f} of {total / 2**30:.1f} GiB free after cleanup)"
    log.warning("out of memory on %s during %s: %s%s", device, what, message, free)
    return DeviceOutOfMemory(
        f"The GPU ran out of memory during {what}{free}; the request was not run. "
        f"Retry, or ask for fewer or smaller images."
    )
