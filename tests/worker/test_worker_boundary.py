"""What the worker does with each way a run can end, seen at its own boundary: a claimed
request goes in through ``run_claimed`` (or the running loops), the stored request comes
out. See conftest.py for why the backends are scripted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from openfal import worker as worker_module
from openfal.backends.base import Job, Output
from openfal.errors import RunCancelled, RunError, RunnerLost
from openfal.events import Preview
from openfal.media.local import LocalMediaStore
from openfal.models import MediaBlob, RequestRecord, Status
from openfal.store.db import Database
from openfal.store.listener import PgListener
from openfal.store.requests import RequestStore
from openfal.store.schema import media as media_table
from openfal.worker import Worker
from tests.worker.conftest import Parts, ScriptedBackend, running


class Flaky(RunError):
    """A failure a fresh attempt could get past (an upstream hiccup)."""

    retryable = True
    status_code = 502


def image() -> MediaBlob:
    return MediaBlob(b"\x89PNG pretend", "image/png", "out.png")


async def claim_and_run(parts: Parts, worker: Worker, backend: ScriptedBackend, count: int = 1) -> list[RequestRecord]:
    """Claim ``count`` queued requests for ``worker`` and run them as one batch to the end."""
    claimed: list[RequestRecord] = []
    for _ in range(count):
        claimed += await parts.store.claim(backends=[backend.name], worker_id=worker.worker_id, lease_seconds=60)
    assert len(claimed) == count
    await worker.run_claimed(backend, claimed)
    return claimed


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def indexed(parts: Parts, request_id: str) -> list[sa.Row]:
    async with parts.db.read() as conn:
        return list((await conn.execute(sa.select(media_table).where(media_table.c.request_id == request_id))).all())


async def test_a_cancel_that_arrives_after_the_backend_finished_ends_it_cancelled_without_storing_media(
    parts: Parts, tmp_path: Path
) -> None:
    async def run(jobs: Sequence[Job]) -> list[Output]:
        # the client cancels (as QueueService.cancel does) while the backend returns
        assert await parts.store.request_cancel(jobs[0].request_id)
        parts.notifier.cancel(jobs[0].request_id)
        return [Output({"images": [image()]})]

    backend = ScriptedBackend(run)
    record = await parts.submit()
    await claim_and_run(parts, parts.worker(backend), backend)

    done = await parts.ended(record.id)
    assert (done.result_status, done.error_type) == (499, "client_cancelled")
    assert stored_files(tmp_path / "media") == []
    assert await indexed(parts, record.id) == []


async def test_a_worker_that_loses_the_requeue_race_leaves_the_new_attempt_alone(parts: Parts) -> None:
    """Its lease lapsed, the reaper requeued the request and another worker took it; the
    first worker's retryable failure then neither requeues nor fails the second attempt."""

    async def run(jobs: Sequence[Job]) -> list[RunError]:
        current = await parts.store.get(jobs[0].request_id)
        assert current is not None and await parts.store.requeue(current)
        assert await parts.store.claim(backends=["builtin"], worker_id="the-other-worker", lease_seconds=60)
        return [Flaky("upstream hiccup")]

    backend = ScriptedBackend(run)
    record = await parts.submit()
    await claim_and_run(parts, parts.worker(backend), backend)

    current = await parts.store.get(record.id)
    assert current is not None
    assert (current.status, current.worker_id, current.attempts) == (Status.IN_PROGRESS, "the-other-worker", 2)
    assert current.result_status is None


async def test_a_retryable_failure_with_attempts_left_is_queued_again(parts: Parts) -> None:
    async def run(jobs: Sequence[Job]) -> list[RunError]:
        return [Flaky("upstream hiccup")]

    backend = ScriptedBackend(run)
    record = await parts.submit()
    await claim_and_run(parts, parts.worker(backend), backend)

    current = await parts.store.get(record.id)
    assert current is not None
    assert (current.status, current.worker_id, current.attempts) == (Status.IN_QUEUE, None, 1)


async def test_a_media_store_failure_fails_the_request_and_removes_the_temporary_file(parts: Parts, tmp_path: Path) -> None:
    class FullDisk(LocalMediaStore):
        """The real folder store, its disk full."""

        async def put(self, blob: MediaBlob, key: str) -> None:
            raise OSError(28, "No space left on device")

    video = tmp_path / "out.mp4"
    video.write_bytes(b"pretend video")

    async def run(jobs: Sequence[Job]) -> list[Output]:
        return [Output({"video": MediaBlob(video, "video/mp4", "out.mp4")})]

    backend = ScriptedBackend(run)
    record = await parts.submit()
    await claim_and_run(parts, parts.worker(backend, media=FullDisk(tmp_path / "media")), backend)

    done = await parts.ended(record.id)
    assert (done.result_status, done.error_type) == (500, "internal_error")
    assert "Storing the result's media failed: OSError" in done.result_body["detail"]
    assert not video.exists()


async def test_a_request_ended_elsewhere_keeps_that_ending(parts: Parts, caplog: pytest.LogCaptureFixture) -> None:
    """The reaper gave up on it while the backend ran: the late result is not written
    over the stored failure, and the media it published still expires."""

    async def run(jobs: Sequence[Job]) -> list[Output]:
        current = await parts.store.get(jobs[0].request_id)
        assert current is not None
        assert await parts.endings.fail(current, RunnerLost("gone"), attempt=current.attempts)
        return [Output({"images": [image()]})]

    backend = ScriptedBackend(run)
    record = await parts.submit()
    with caplog.at_level(logging.WARNING, logger="openfal.worker"):
        await claim_and_run(parts, parts.worker(backend), backend)

    done = await parts.ended(record.id)
    assert (done.result_status, done.error_type) == (503, "runner_disconnected")
    assert "was ended elsewhere" in caplog.text
    [row] = await indexed(parts, record.id)
    assert row.expires_at is not None


async def test_a_backend_crash_fails_the_request_with_an_internal_error(parts: Parts) -> None:
    async def run(jobs: Sequence[Job]) -> list[Output]:
        raise ValueError("boom")

    backend = ScriptedBackend(run)
    record = await parts.submit()
    await claim_and_run(parts, parts.worker(backend), backend)

    done = await parts.ended(record.id)
    assert (done.result_status, done.error_type) == (500, "internal_error")
    assert done.result_body["detail"] == "The builtin backend failed: ValueError: boom"


async def test_a_backend_returning_the_wrong_number_of_results_fails_the_whole_batch(parts: Parts) -> None:
    async def run(jobs: Sequence[Job]) -> list[Output]:
        return [Output({"images": []})]

    backend = ScriptedBackend(run)
    first, second = await parts.submit(), await parts.submit()
    await claim_and_run(parts, parts.worker(backend), backend, count=2)

    for record in (first, second):
        done = await parts.ended(record.id)
        assert (done.result_status, done.error_type) == (500, "internal_error")
        assert done.result_body["detail"] == "The builtin backend returned 1 results for 2 requests"


async def until_cancelled(jobs: Sequence[Job]) -> list[RunCancelled | Output]:
    """A backend step loop that stops at a cancel (waits at most 20 s for one)."""
    deadline = time.monotonic() + 20
    while not jobs[0].cancelled and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return [RunCancelled() if jobs[0].cancelled else Output({"never": "cancelled"})]


async def test_a_cancel_from_another_process_reaches_the_run_through_the_poll(parts: Parts, db_url: str) -> None:
    """Another API process shares the database, not this process's Notifier (and no
    PostgreSQL listener runs here): the worker's cancel poll must find the flag."""
    backend = ScriptedBackend(until_cancelled)
    record = await parts.submit()
    other = Database(db_url)
    try:
        async with running(parts.worker(backend)):
            await parts.until(record.id, lambda r: r.status == Status.IN_PROGRESS)
            assert await RequestStore(other).request_cancel(record.id)
            done = await parts.ended(record.id)
    finally:
        await other.close()
    assert (done.result_status, done.error_type) == (499, "client_cancelled")


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
async def test_a_cancel_from_another_process_reaches_the_run_through_postgresql_notify(
    parts: Parts, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the poll slowed to an hour, only LISTEN/NOTIFY can carry the cancel."""
    monkeypatch.setattr(worker_module, "CANCEL_POLL_SECONDS", 3600.0)
    backend = ScriptedBackend(until_cancelled)
    record = await parts.submit()
    listener = PgListener(db_url, parts.notifier)
    listener.start()
    other = Database(db_url)
    try:
        async with running(parts.worker(backend)):
            await parts.until(record.id, lambda r: r.status == Status.IN_PROGRESS)
            # the listener connects in the background: cancel again until one notification lands
            # (the backend gives up waiting after 20 s, so a notification that never lands fails the test)
            while (await parts.store.get(record.id)).status is not Status.COMPLETED:  # type: ignore[union-attr]
                await RequestStore(other).request_cancel(record.id)
                await asyncio.sleep(0.2)
            done = await parts.ended(record.id)
    finally:
        await other.close()
        await listener.close()
    assert (done.result_status, done.error_type) == (499, "client_cancelled")


async def test_a_step_preview_is_stored_as_media_that_expires_an_hour_later(parts: Parts, tmp_path: Path) -> None:
    async def run(jobs: Sequence[Job]) -> list[Output]:
        jobs[0].emit(Preview(b"\xff\xd8 pretend jpeg"))
        return [Output({"echo": {}})]

    backend = ScriptedBackend(run)
    record = await parts.submit()
    await claim_and_run(parts, parts.worker(backend), backend)

    done = await parts.ended(record.id)
    [row] = await indexed(parts, record.id)
    assert done.preview_url == f"http://test/files/{row.key}"
    assert (tmp_path / "media" / row.key).read_bytes() == b"\xff\xd8 pretend jpeg"
    assert row.expires_at - row.created_at == pytest.approx(3600.0)
