"""Queue operations as fal defines them, free of HTTP: submit, status, result, cancel,
follow (for SSE) and run (synchronous). Routes translate the wire format and call
exactly one of these."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from openfal import metrics
from openfal.accounting import Accounts
from openfal.aio import wait_event
from openfal.backends.base import Backend
from openfal.config import Settings
from openfal.endings import Endings
from openfal.endpoints.catalog import validate_input
from openfal.endpoints.ids import app_of
from openfal.errors import (
    BadRequest,
    EndpointNotAllowed,
    IdempotencyConflict,
    LicenceNotAllowed,
    QueueFull,
    RequestNotFound,
    RunCancelled,
    StillInProgress,
)
from openfal.media.retention import DEFAULT as DEFAULT_LIFECYCLE
from openfal.media.retention import MediaLifecycle
from openfal.models import ApiKey, LogEntry, Priority, RequestRecord, Status
from openfal.routing import Route, Router
from openfal.store.requests import DuplicateIdempotencyKey, KeyQueueFull, RequestStore
from openfal.store.workers import WorkerRegistry

CancelOutcome = Literal["CANCELLATION_REQUESTED", "ALREADY_COMPLETED"]


@dataclass(frozen=True, slots=True)
class SubmitOptions:
    """What a submit carries besides its input, already parsed and checked (the wire
    parses fal's headers and query parameters into it: http/wire.py)."""

    priority: Priority = Priority.normal
    #: unix time by which it must have started; None: no deadline
    start_deadline: float | None = None
    #: an http(s) URL the deliverer can use
    webhook_url: str | None = None
    #: refuse the submit when this many requests wait for its backend already
    max_queue_length: int | None = None
    #: False: forget the input at completion and keep the result only until it is read
    store_io: bool = True
    #: True: the first retryable failure is final
    no_retry: bool = False
    #: how long the files it makes are kept
    lifecycle: MediaLifecycle = DEFAULT_LIFECYCLE
    #: as the client sent it (scoped to the API key here)
    idempotency_key: str | None = None
    #: X-Fal-Runner-Hint: prefer a worker that advertises this exact string
    runner_hint: str | None = None


@dataclass(frozen=True, slots=True)
class Submitted:
    record: RequestRecord
    #: requests ahead of it; None once it has left the queue (an idempotent replay)
    queue_position: int | None
    #: an earlier submit with the same Idempotency-Key, answered again
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class StatusView:
    record: RequestRecord
    queue_position: int | None
    logs: list[LogEntry] | None
    #: the id of the last log included, for incremental streams
    last_log_id: int = 0
    #: while queued: seconds until it should start, from recent run times (None: no runs yet)
    eta_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Result:
    status_code: int
    body: Any
    headers: dict[str, str]


class QueueService:
    def __init__(
        self,
        *,
        settings: Settings,
        store: RequestStore,
        router: Router,
        backends: Mapping[str, Backend],
        endings: Endings,
        accounts: Accounts,
        registry: WorkerRegistry,
    ) -> None:
        self.settings = settings
        self.store = store
        #: the live workers, whose slots spread a queued request's ETA
        self.registry = registry
        self.router = router
        self.backends = backends
        #: the store's: woken by every change it commits and, through its feed, by others'
        self.notifier = store.notifier
        self.endings = endings
        self.accounts = accounts

    # -- submit -------------------------------------------------------------------

    async def submit(
        self, endpoint_id: str, body: Any, *, key: ApiKey | None, base_url: str, options: SubmitOptions
    ) -> Submitted:
        """Validate, persist (committed before we answer), wake a worker. A submit
        repeating an earlier one's Idempotency-Key gets that request back instead, so a
        client retrying after a lost answer never runs (or pays for) it twice."""
        route, data = self._accept(endpoint_id, body, key)
        idempotency = _idempotency(options.idempotency_key, key, endpoint_id, data)
        values: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "app": app_of(endpoint_id),
            "endpoint_id": endpoint_id,
            "backend": route.backend,
            "key_id": key.id if key else None,
            "priority": int(options.priority),
            "batch_key": self.backends[route.backend].batch_key(endpoint_id, data),
            "input": data,
            "base_url": base_url,
            "webhook_url": options.webhook_url,
            "store_io": options.store_io,
            "no_retry": options.no_retry,
            "media_ttl": options.lifecycle.ttl,
            "media_keep_forever": options.lifecycle.keep_forever,
            "media_acl": options.lifecycle.acl,
            "start_deadline": options.start_deadline,
            "idempotency_key": idempotency[0] if idempotency else None,
            "idempotency_hash": idempotency[1] if idempotency else None,
            "runner_hint": options.runner_hint,
        }
        if idempotency is not None and (earlier := await self.store.find_idempotent(idempotency[0])):
            return await self._replay(earlier, idempotency[1])
        await self._check_queue_length(route.backend, options.max_queue_length)
        try:
            limits: dict[str, Any] = {"max_queued": key.max_queued, "rpm": key.rpm} if key else {}
            reserve = self.accounts.estimate(endpoint_id, data)
            record = await self.store.insert(reserve=reserve, **limits, **values)
        except KeyQueueFull as full:
            raise QueueFull(f"This API key already has {full.limit} requests waiting in the queue (its max_queued)") from None
        except DuplicateIdempotencyKey:
            assert idempotency is not None
            earlier = await self.store.find_idempotent(idempotency[0])
            assert earlier is not None, "the request holding the idempotency key is gone"
            return await self._replay(earlier, idempotency[1])
        metrics.SUBMITTED.labels(endpoint_id).inc()
        return Submitted(record, await self.store.queue_position(record))

    def _accept(self, endpoint_id: str, body: Any, key: ApiKey | None) -> tuple[Route, dict[str, Any]]:
        """The route and the validated input, or the error that refuses them."""
        route = self.router.resolve(endpoint_id)
        if key is not None and not key.may_use(endpoint_id):
            raise EndpointNotAllowed(f"This API key may not use {endpoint_id}")
        if key is not None and key.commercial_only and not self.router.commercially_usable(route.spec):
            raise LicenceNotAllowed(_licence_refusal(endpoint_id, route))
        if route.spec is not None:
            data = validate_input(route.spec, body)
        elif isinstance(body, dict):
            data = body
        else:
            raise BadRequest("The request body must be a JSON object")
        self.backends[route.backend].admit(endpoint_id, data)
        return route, data

    async def _replay(self, earlier: RequestRecord, digest: str) -> Submitted:
        if earlier.idempotency_hash != digest:
            raise IdempotencyConflict("This Idempotency-Key was already used for a different endpoint or input")
        queued = earlier.status is Status.IN_QUEUE
        return Submitted(earlier, await self.store.queue_position(earlier) if queued else None, replayed=True)

    async def _check_queue_length(self, backend: str, maximum: int | None) -> None:
        if maximum is not None and await self.store.queue_length(backend) >= maximum:
            raise QueueFull(f"The queue has {maximum} or more requests waiting")

    # -- reading ------------------------------------------------------------------

    async def get(self, app: str, request_id: str, key: ApiKey | None) -> RequestRecord:
        """The request, if it exists under this app and this key may see it; as current
        as the store's views are (never older than this process's own commits)."""
        record = await self.store.view(request_id)
        if record is None or record.app != app or not _may_see(key, record):
            raise RequestNotFound(f"Request {request_id} not found")
        return record

    async def status(self, app: str, request_id: str, key: ApiKey | None, *, with_logs: bool) -> StatusView:
        record = await self.get(app, request_id, key)
        return await self._view(record, with_logs=with_logs)

    async def _view(self, record: RequestRecord, *, with_logs: bool, after_log: int = 0) -> StatusView:
        position, eta = None, None
        if record.status is Status.IN_QUEUE:
            position = await self.store.queue_position(record)
            eta = await self._eta(record, position)
        elif record.status is Status.IN_PROGRESS and record.upstream_position is not None:
            position = record.upstream_position
        logs, last = None, after_log
        if with_logs:
            entries = await self.store.logs(record.id, after=after_log)
            logs = [entry for _, entry in entries]
            last = entries[-1][0] if entries else after_log
        return StatusView(record, position, logs, last, eta)

    async def _eta(self, record: RequestRecord, position: int) -> float | None:
        """Seconds until a queued request should start: the runs ahead of it (and the
        one it waits behind) at the backend's recent mean run time, over the slots of
        the live workers serving it."""
        run_seconds = await self.store.recent_run_seconds(record.backend)
        if run_seconds is None:
            return None
        slots = max(1, await self.registry.slots(record.backend))
        return round(run_seconds * (position + 1) / slots, 3)

    async def result(self, app: str, request_id: str, key: ApiKey | None) -> Result:
        record = await self.get(app, request_id, key)
        if record.status is not Status.COMPLETED:
            raise StillInProgress()
        return _result(record)

    async def follow(
        self, app: str, request_id: str, key: ApiKey | None, *, with_logs: bool
    ) -> AsyncIterator[StatusView | None]:
        """Status views as they change (logs incremental), ending with COMPLETED.
        Yields None on quiet ticks so the caller can send keep-alives. While the store's
        change feed is live a follower sleeps until woken (an idle stream costs
        nothing); otherwise it re-reads every ``poll_interval_seconds``."""
        record = await self.get(app, request_id, key)
        view = await self._view(record, with_logs=with_logs)
        yield view
        version, last_log = record.version, view.last_log_id
        while view.record.status is not Status.COMPLETED:
            queued = view.record.backend if view.record.status is Status.IN_QUEUE else None
            # watched before the re-read: a change while the last view was being sent
            # (the request may have completed meanwhile) is seen, not waited out
            woken = self.notifier.watch(request_id, queue=queued)
            current = await self.store.view(request_id)
            if current is not None and current.version == version and not woken.is_set():
                await wait_event(woken, self._follow_seconds())
                current = await self.store.view(request_id)
            if current is None:
                raise RequestNotFound(f"Request {request_id} not found")
            if current.version == version:
                if queued is not None:
                    fresh = await self._view(current, with_logs=False)
                    if fresh.queue_position != view.queue_position:
                        view = StatusView(current, fresh.queue_position, [] if with_logs else None, last_log, fresh.eta_seconds)
                        yield view
                        continue
                yield None
                continue
            view = await self._view(current, with_logs=with_logs, after_log=last_log)
            version, last_log = current.version, view.last_log_id
            yield view

    def _follow_seconds(self) -> float:
        if self.store.changes_pushed:
            return self.settings.sse_keepalive_seconds
        return self.settings.poll_interval_seconds

    # -- cancel -------------------------------------------------------------------

    async def cancel(self, app: str, request_id: str, key: ApiKey | None) -> CancelOutcome:
        """Queued: ended now, never run. Running: its worker stops at the next step."""
        record = await self.get(app, request_id, key)
        for _ in range(3):
            if record.status is Status.COMPLETED:
                return "ALREADY_COMPLETED"
            if record.status is Status.IN_QUEUE:
                if await self.endings.fail(record, RunCancelled(), expect=Status.IN_QUEUE):
                    return "CANCELLATION_REQUESTED"
            elif await self.store.request_cancel(record.id):
                return "CANCELLATION_REQUESTED"
            record = await self.get(app, request_id, key)
        return "ALREADY_COMPLETED" if record.status is Status.COMPLETED else "CANCELLATION_REQUESTED"

    # -- synchronous run ----------------------------------------------------------

    async def wait(self, record: RequestRecord) -> Result:
        """Block until the request completes (fal.run): the queue still carries it, so
        it is durable and ordered like any other."""
        while True:
            current = await self.store.get(record.id)
            if current is None:
                raise RequestNotFound(f"Request {record.id} not found")
            if current.status is Status.COMPLETED:
                return _result(current)
            await self.notifier.wait_changed(record.id, self.settings.poll_interval_seconds)

    async def abandon(self, record: RequestRecord) -> None:
        """The synchronous caller went away: cancel, as fal does for dropped connections."""
        current = await self.store.get(record.id)
        if current is not None and current.status is not Status.COMPLETED:
            await self.cancel(current.app, current.id, None)

    async def history(
        self, key: ApiKey | None, *, limit: int, before: int | None, status: Status | None = None, endpoint_id: str | None = None
    ) -> list[RequestRecord]:
        owner = None if key is None or key.is_admin else key.id
        return await self.store.history(owner, limit=limit, before_seq=before, status=status, endpoint_id=endpoint_id)


def _licence_refusal(endpoint_id: str, route: Route) -> str:
    """Why a key limited to commercial use may not call an endpoint: its licence."""
    assert route.spec is not None and route.spec.licence is not None
    licence = route.spec.licence
    return f"This API key may only use commercially usable models; {endpoint_id} is under the {licence.name} licence ({licence.url})"


def _may_see(key: ApiKey | None, record: RequestRecord) -> bool:
    return key is None or key.is_admin or record.key_id == key.id


def _result(record: RequestRecord) -> Result:
    headers = dict(record.result_headers or {})
    body = record.result_body
    if body is None and record.error is None:
        body = {"detail": "The result of this request was not stored (X-Fal-Store-IO: 0) or has expired"}
        return Result(410, body, headers)
    return Result(record.result_status or 200, body, headers)


def _idempotency(value: str | None, key: ApiKey | None, endpoint_id: str, data: dict[str, Any]) -> tuple[str, str] | None:
    """(stored key, digest of what it names): keys are scoped to the API key that sent
    them, and the digest tells a retry from a reuse for something else."""
    if value is None:
        return None
    canonical = json.dumps([endpoint_id, data], sort_keys=True, separators=(",", ":"))
    return f"{key.id if key else '-'}:{value}", hashlib.sha256(canonical.encode()).hexdigest()
