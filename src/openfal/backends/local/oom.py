"""Out of device memory is an answer, not a crash.

A CUDA out-of-memory error inside a run (or while moving weights onto the device) ends
that request ``503 runner_scheduling_failure``, the error fal gives when no runner
could take a request, after freeing what the failed call held: the exception's
traceback keeps every activation of the failed call alive until it is dropped, so the
memory is released only once we are out of the ``except`` block. The next request then
runs on a clean device.
"""

from __future__ import annotations

import gc
import logging

import torch

from openfal.errors import DeviceOutOfMemory

log = logging.getLogger("openfal.local")


def release_memory(device: torch.device) -> None:
    """Collect garbage and hand cached blocks back to the driver."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def out_of_memory(device: torch.device, what: str, exc: BaseException) -> DeviceOutOfMemory:
    """The error to raise for an OOM during ``what`` (call after leaving the ``except``)."""
    release_memory(device)
    free = ""
    if device.type == "cuda":
        available, total = torch.cuda.mem_get_info(device)
        free = f" ({available / 2**30:.1f} of {total / 2**30:.1f} GiB free after cleanup)"
    log.warning("out of memory on %s during %s: %s%s", device, what, str(exc).splitlines()[0] if str(exc) else "", free)
    return DeviceOutOfMemory(
        f"The GPU ran out of memory during {what}{free}; the request was not run. "
        f"Retry, or ask for fewer or smaller images."
    )
