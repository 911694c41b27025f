"""A worker holds a request's lease until the request has ended: storing the result's
images or video (which can take long on a slow S3) is part of running it. A lease that
lapsed while publishing would let the reaper requeue the request: it would run twice and
the first result's media would be orphaned."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from openfal.backends.base import Output
from openfal.media.local import LocalMediaStore
from openfal.models import MediaBlob
from openfal.reaper import Reaper
from tests.worker.conftest import Parts, ScriptedBackend, running


class SlowMedia(LocalMediaStore):
    """A media store slower than the lease: ``put`` returns only once the lease the
    request was claimed with has run out and the reaper has swept. Otherwise the real
    local folder (a slow S3 upload cannot be made on loopback on demand)."""

    def __init__(self, root: Path, reaper: Reaper, lease_seconds: float) -> None:
        super().__init__(root)
        self.reaper = reaper
        self.lease_seconds = lease_seconds
        #: when the backend was called for each attempt: its claim's lease ends before then + lease
        self.claimed_at: list[float] = []
        self.keys: list[str] = []

    async def put(self, blob: MediaBlob, key: str) -> None:
        lease_ran_out = self.claimed_at[-1] + self.lease_seconds + 0.3
        while time.time() < lease_ran_out:
            await asyncio.sleep(0.05)
        await self.reaper.sweep()
        await super().put(blob, key)
        self.keys.append(key)


async def test_the_lease_is_renewed_while_the_result_is_published(parts: Parts, tmp_path: Path) -> None:
    parts.tune(lease_seconds=1.0, heartbeat_seconds=0.1)
    media = SlowMedia(tmp_path / "slow-media", parts.reaper(), parts.settings.lease_seconds)

    async def run(jobs):  # type: ignore[no-untyped-def]
        media.claimed_at.append(time.time())
        return [Output({"images": [MediaBlob(b"\x89PNG not really", "image/png", "out.png")]})]

    backend = ScriptedBackend(run)
    record = await parts.submit()
    async with running(parts.worker(backend, media=media)):
        done = await parts.ended(record.id)

    assert done.result_status == 200, done.result_body
    assert backend.calls == [[record.id]], "the request ran more than once: its lease lapsed while publishing"
    assert done.attempts == 1
    assert [done.result_body["images"][0]["url"]] == [f"http://test/files/{key}" for key in media.keys]
