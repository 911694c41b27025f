"""openfal's own utility endpoints: ``openfal/utils/echo`` (a no-op, to measure the
queue itself) and ``openfal/utils/sleep`` (steps with logs, progress and cancel)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from openfal.backends.base import BackendBase, Job, Output
from openfal.errors import RunCancelled, RunError, SleepFailed
from openfal.events import Log, Progress


class BuiltinBackend(BackendBase):
    name = "builtin"

    async def run(self, jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        return [await self._one(job) for job in jobs]

    async def _one(self, job: Job) -> Output | RunError:
        if job.endpoint_id == "openfal/utils/echo":
            return Output({"echo": job.input})
        seconds, steps = float(job.input["seconds"]), int(job.input["steps"])
        for step in range(1, steps + 1):
            if job.cancelled:
                return RunCancelled()
            await asyncio.sleep(seconds / steps)
            job.emit(Log(f"step {step}/{steps}"))
            job.emit(Progress(step, steps))
        if job.input.get("fail_with"):
            return SleepFailed(job.input["fail_with"])
        return Output({"slept": seconds, "steps": steps})
