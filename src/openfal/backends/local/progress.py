"""The per-step callback: progress, logs, previews and cancellation.

diffusers calls ``callback_on_step_end(pipe, i, t, kwargs)`` after every denoising step
from the worker thread; ``Job.emit`` is thread-safe. Cancelling raises ``RunCancelled``
from inside the callback, which leaves the loop at once with no VAE decode (diffusers'
own ``_interrupt`` flag would still decode the partial latents). In a batch the run goes
on while any of its jobs still wants its images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from openfal.backends.base import Job
from openfal.errors import RunCancelled
from openfal.events import Log, Preview, Progress

#: at most one preview per job per this many seconds
PREVIEW_INTERVAL_SECONDS = 1.0

PreviewFn = Callable[[torch.Tensor, int], bytes]


class StepReporter:
    """A ``callback_on_step_end`` reporting one pipeline call to the jobs in it.

    ``first_index[j]`` is the batch row of job ``j``'s first image (its preview).
    ``preview`` turns the callback's latents and a row into JPEG bytes, or is None.
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        *,
        first_index: Sequence[int],
        preview: PreviewFn | None = None,
        preview_interval: float = PREVIEW_INTERVAL_SECONDS,
    ) -> None:
        self.jobs = list(jobs)
        self.first_index = list(first_index)
        self.preview = preview
        self.preview_interval = preview_interval
        self.steps_done = 0
        self._last_preview = -float("inf")

    def check_cancelled(self) -> None:
        """Stop the run if every job in it was cancelled."""
        if all(job.cancelled for job in self.jobs):
            raise RunCancelled()

    def __call__(self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        self.check_cancelled()
        total = int(getattr(pipe, "num_timesteps", 0)) or index + 1
        self.steps_done = index + 1
        live = [(job, row) for job, row in zip(self.jobs, self.first_index, strict=True) if not job.cancelled]
        for job, _ in live:
            job.emit(Log(f"step {self.steps_done}/{total}"))
            job.emit(Progress(self.steps_done, total))
        now = time.monotonic()
        latents = tensors.get("latents")
        due = now - self._last_preview >= self.preview_interval
        if self.preview is not None and latents is not None and self.steps_done < total and due:
            self._last_preview = now
            for job, row in live:
                job.emit(Preview(self.preview(latents, row)))
        return {}
