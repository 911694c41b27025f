"""openfal's own utility endpoints: ``openfal/utils/echo`` (a no-op, to measure the
queue itself) and ``openfal/utils/sleep`` (steps with logs, progress and cancel)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from openfal.backends.base import Job, Output
from openfal.errors import RunCancelled, RunError, SleepFailed
from openfal.events import Log, Progress


class BuiltinBackend:
    name = "builtin"
    max_batch_size = 1
    default_concurrency = 1
    max_run_seconds: float | None = None

    def admit(self, endpoint_id: str, input: dict[str, Any]) -> None:
        return None

    def batch_key(self, endpoint_id: str, input: dict[str, Any]) -> str | None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {}

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
