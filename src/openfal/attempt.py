"""One claimed attempt at a request: the Job its backend runs, the events it reports
folded into the store, and how the attempt ends.

The worker supervises (slots, leases, cancels, time limits, stuck runs); what happens to
one request between its claim and its ending is here. ``decide`` is the policy and is
pure, so every way a run can end is a plain value in and a plain value out;
``Attempt.end`` carries the decision out through the store and ``Endings``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

from openfal import events
from openfal.backends.base import Job, Output
from openfal.endings import Endings
from openfal.errors import InternalError, RunCancelled, RunError, RunTimedOut
from openfal.media import MediaStore
from openfal.media.access import OWNER_ONLY, signed_url
from openfal.media.publish import discard_files, publish, publish_preview
from openfal.media.retention import MediaLifecycle
from openfal.models import LogEntry, Priority, RequestRecord
from openfal.store.media_index import MediaIndex
from openfal.store.requests import RequestStore
from openfal.uploads import UploadSigner

# an attempt is the worker's work: operators filter its log lines under the worker's name
log = logging.getLogger("openfal.worker")

#: step previews are only looked at while the request runs
PREVIEW_TTL_SECONDS = 3600.0
_UNCHANGED = object()


@dataclass(frozen=True, slots=True)
class Requeue:
    """Queue the request again for a fresh attempt; ``error`` ends it instead when it is
    no longer ours to requeue (its lease lapsed and another worker holds it)."""

    error: RunError


@dataclass(frozen=True, slots=True)
class Fail:
    error: RunError


@dataclass(frozen=True, slots=True)
class Publish:
    """Store the output's media, then complete the request with it."""

    output: Output


Decision = Requeue | Fail | Publish


def decide(record: RequestRecord, job: Job, outcome: Output | RunError, *, max_attempts: int, run_limit: float) -> Decision:
    """How this attempt ends. A cancel wins over a result that came back with it (the
    client was told it is cancelled); a cancel the time limit made is a timeout; only a
    retryable failure with attempts left is tried again, never a cancel."""
    if isinstance(outcome, Output):
        if not job.cancelled:
            return Publish(outcome)
        outcome = RunCancelled()
    if isinstance(outcome, RunCancelled):
        if job.timed_out:
            return Fail(RunTimedOut(f"The request ran longer than this server's limit of {run_limit:g} s and was stopped"))
        return Fail(outcome)
    if outcome.retryable and record.may_retry(max_attempts):
        return Requeue(outcome)
    return Fail(outcome)


@dataclass(frozen=True, slots=True)
class Attempts:
    """What every attempt of one worker process writes through."""

    store: RequestStore
    endings: Endings
    media: MediaStore
    media_index: MediaIndex
    worker_id: str
    max_attempts: int
    #: signs step previews' URLs (None: unsigned, readable with the request's own key only)
    files_signer: UploadSigner | None = None

    def begin(self, record: RequestRecord) -> Attempt:
        return Attempt(self, record)


class Attempt:
    """One claimed request, from the Job its backend runs to the request's ending."""

    def __init__(self, through: Attempts, record: RequestRecord) -> None:
        self.through = through
        self.record = record
        self.events = EventFolder(through, record)
        self.job = self._job()

    def _job(self) -> Job:
        record, through = self.record, self.through
        job = Job(
            request_id=record.id,
            endpoint_id=record.endpoint_id,
            input=record.input,
            attempt=record.attempts,
            emit=self.events.emit,
            key_id=record.key_id,
            state=record.backend_state,
            priority=Priority(record.priority).name,
            no_retry=record.no_retry,
        )
        job.save_state = lambda state: through.store.save_backend_state(record.id, through.worker_id, state)
        if record.cancel_requested:
            job.cancel()
        return job

    async def hand_back(self) -> None:
        """Give the request back unfinished (the worker is draining), the attempt not
        counted; one that has already ended is not IN_PROGRESS, so this does nothing to it."""
        await self.through.store.hand_back(self.record, self.through.worker_id)

    async def end(self, outcome: Output | RunError, *, elapsed: float, run_limit: float) -> None:
        match decide(self.record, self.job, outcome, max_attempts=self.through.max_attempts, run_limit=run_limit):
            case Requeue(error):
                await self._requeue(error, elapsed)
            case Fail(error):
                await self._fail(error, elapsed)
            case Publish(output):
                await self._publish(output, elapsed)

    async def _requeue(self, error: RunError, elapsed: float) -> None:
        if await self.through.store.requeue(self.record):
            return
        await self._fail(error, elapsed)

    async def _fail(self, error: RunError, elapsed: float | None) -> None:
        record = self.record
        await self.through.endings.fail(record, error, worker_id=self.through.worker_id, attempt=record.attempts, inference_time=elapsed)

    async def _publish(self, output: Output, elapsed: float) -> None:
        record, through = self.record, self.through
        try:
            body = await self._published(output)
        except Exception as exc:
            log.exception("publishing media of %s failed", record.id)
            await self._fail(InternalError(f"Storing the result's media failed: {type(exc).__name__}: {exc}"), None)
            return
        if flagged(body):
            await self.events.forget_previews()  # they showed what the safety checker hid
        done = await through.endings.succeed(
            record, body, inference_time=elapsed, worker_id=through.worker_id, attempt=record.attempts, video_seconds=output.usage.video_seconds
        )
        if done is None:
            log.warning("request %s was ended elsewhere before this worker finished it", record.id)

    async def _published(self, output: Output) -> Any:
        """The output's body with its media stored; the temporary files behind it are
        gone afterwards, stored or not."""
        record, index = self.record, self.through.media_index
        asked = MediaLifecycle(ttl=record.media_ttl, keep_forever=record.media_keep_forever, acl=record.media_acl)
        # what the request left open comes from its key's storage settings
        kept = asked.over(await index.defaults(record.key_id)) if record.key_id and (asked.keeps_default or asked.acl is None) else asked
        try:
            return await publish(
                output.payload,
                media=self.through.media,
                base_url=record.base_url,
                inline=bool(record.input.get("sync_mode")),
                on_stored=lambda key, size: index.add(
                    key, size, request_id=record.id, ttl=kept.ttl, keep_forever=kept.keep_forever, key_id=record.key_id, acl=kept.acl
                ),
            )
        finally:
            discard_files(output.payload)


def flagged(body: Any) -> bool:
    """Whether a result's safety check flagged anything (fal's ``has_nsfw_concepts``)."""
    concepts = body.get("has_nsfw_concepts") if isinstance(body, dict) else None
    return isinstance(concepts, list) and any(concepts)


class EventFolder:
    """Collects one job's events (from any thread) and writes them in bursts.

    Step previews are drawn before the safety check has looked at the image, so none is
    public: each is stored readable by the request's own key and admins only
    (``OWNER_ONLY``, 404 to any other key and to no key), and the URL the status and
    stream carry is signed to expire with the preview, so the requester's browser can
    show it (as fal streams previews to the caller alone). If the check then flags the
    result, the previews are deleted before the result is recorded."""

    def __init__(self, through: Attempts, record: RequestRecord) -> None:
        self.through = through
        self.record = record
        #: the media keys of this attempt's previews
        self.previews: list[str] = []
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[events.Event | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._drain(), name=f"events-{record.id}")

    def emit(self, event: events.Event) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def close(self) -> None:
        # through the same thread-safe path, so it lands after every event already emitted
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)
        await self.task

    async def _drain(self) -> None:
        closed = False
        while not closed:
            burst = [await self.queue.get()]
            while not self.queue.empty():
                burst.append(self.queue.get_nowait())
            closed = None in burst
            try:
                await self._write([e for e in burst if e is not None])
            except Exception:
                log.exception("recording events of %s failed", self.record.id)

    async def _write(self, burst: list[events.Event]) -> None:
        if not burst:
            return
        logs, progress, preview = [], None, None
        position: int | None | object = _UNCHANGED
        for event in burst:
            if isinstance(event, events.Log):
                logs.append(LogEntry(timestamp=time.time(), message=event.message, level=event.level))
            elif isinstance(event, events.Progress):
                progress = (event.step, event.total)
            elif isinstance(event, events.Preview):
                preview = event
            elif isinstance(event, events.QueuePosition):
                position = event.position
        preview_url = await self._store_preview(preview) if preview else None
        await self.through.store.record_events(
            self.record.id,
            logs=logs,
            progress=progress,
            preview_url=preview_url,
            **({} if position is _UNCHANGED else {"upstream_position": cast(int | None, position)}),
        )

    async def _store_preview(self, preview: events.Preview) -> str:
        record, index = self.record, self.through.media_index
        key = await publish_preview(
            preview,
            media=self.through.media,
            on_stored=lambda key, size: index.add(key, size, request_id=record.id, ttl=PREVIEW_TTL_SECONDS, key_id=record.key_id, acl=OWNER_ONLY),
        )
        self.previews.append(key)
        signer = self.through.files_signer
        if signer is None:
            return f"{record.base_url}/files/{key}"
        return signed_url(record.base_url, key, signer.file_signature(key, time.time() + PREVIEW_TTL_SECONDS))

    async def forget_previews(self) -> None:
        """Delete this attempt's previews (files and index rows)."""
        keys, self.previews = self.previews, []
        for key in keys:
            await self.through.media.delete(key)
        if keys:
            await self.through.media_index.forget(keys)
