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

#: a preview of one batch row as JPEG bytes, or None when the family has no cheap one
PreviewFn = Callable[[torch.Tensor, int], bytes | None]


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
        #: previews copying off the GPU: (event recorded after the copies, (job, host copy))
        self._pending: list[tuple[Any, list[tuple[Job, torch.Tensor]]]] = []

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
        self._emit_landed(final=self.steps_done >= total)
        due = now - self._last_preview >= self.preview_interval
        if self.preview is not None and latents is not None and self.steps_done < total and due:
            self._last_preview = now
            if latents.is_cuda:
                self._copy_off_device(latents, live)
            else:
                for job, row in live:
                    self._emit_preview(job, latents, row)
        return {}

    def _emit_preview(self, job: Job, latents: torch.Tensor, row: int) -> None:
        """A family without a cheap latent->RGB projection (Qwen-Image) returns None: no preview."""
        data = self.preview(latents, row)  # type: ignore[misc]
        if data is not None:
            job.emit(Preview(data))

    def _copy_off_device(self, latents: torch.Tensor, live: list[tuple[Job, int]]) -> None:
        """Start copying each job's preview row into pinned host memory on the current
        stream without waiting for it: reading a GPU tensor from the host would stall
        the CPU until the step finishes, leaving the GPU idle while the next step's
        kernels are launched. The preview is made at a later step, once the copy landed."""
        copies = []
        for job, row in live:
            host = torch.empty(latents[row : row + 1].shape, dtype=latents.dtype, pin_memory=True)
            with torch.cuda.device(latents.device):
                host.copy_(latents[row : row + 1], non_blocking=True)
            copies.append((job, host))
        landed = torch.cuda.Event()
        landed.record(torch.cuda.current_stream(latents.device))  # the latents' GPU, not the current device
        self._pending.append((landed, copies))

    def _emit_landed(self, *, final: bool) -> None:
        """Previews whose copies have landed; at the last step the rest are dropped (the
        result itself is about to arrive)."""
        keep = []
        for landed, copies in self._pending:
            if landed.query():
                for job, host in copies:
                    if not job.cancelled:
                        self._emit_preview(job, host, 0)
            elif not final:
                keep.append((landed, copies))
        self._pending = keep


class VideoReporter(StepReporter):
    """One video's denoising steps, then its decoded chunks, counted as one run of units
    (a progress bar does not start again at 0 for the decode). Cancelling, and the
    run-time limit (which cancels), is seen between chunks as between steps."""

    def __init__(self, job: Job, *, decode_chunks: int = 0) -> None:
        super().__init__([job], first_index=[0])
        self.job = job
        #: chunks the family decodes with a report each (0: decoded inside the pipeline)
        self.decode_chunks = decode_chunks
        self.steps_total = 0

    def __call__(self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        self.check_cancelled()
        self.steps_total = int(getattr(pipe, "num_timesteps", 0)) or index + 1
        self.steps_done = index + 1
        self.job.emit(Log(f"step {self.steps_done}/{self.steps_total}"))
        self.job.emit(Progress(self.steps_done, self.steps_total + self.decode_chunks))
        return {}

    def decoded(self, chunk: int, first_frame: int, last_frame: int, frames: int) -> None:
        """Chunk ``chunk`` (1-based) of the decode is done: frames ``first_frame`` to
        ``last_frame`` (1-based) of ``frames`` exist."""
        self.check_cancelled()
        self.job.emit(Log(f"decoded frames {first_frame}-{last_frame} of {frames}"))
        self.job.emit(Progress(self.steps_total + chunk, self.steps_total + self.decode_chunks))
