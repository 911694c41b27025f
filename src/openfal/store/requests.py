"""Every read and write of queued requests. Status changes happen here and nowhere
else, each one guarded by the state it expects (compare-and-swap), so a stale worker,
a reaper and a cancel can race without a request completing twice."""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import fields, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from openfal.models import LogEntry, RequestRecord, Status
from openfal.store.db import Database
from openfal.store.listener import notify
from openfal.store.schema import api_keys, request_logs, requests

_FIELDS = {f.name for f in fields(RequestRecord)}
_T = requests.c


class DuplicateIdempotencyKey(Exception):
    """Another submit with the same idempotency key committed first; nothing was stored."""


def _record(row: sa.Row[Any]) -> RequestRecord:
    data = {k: v for k, v in row._mapping.items() if k in _FIELDS}
    data["status"] = Status(data["status"])
    data["cancel_requested"] = bool(data["cancel_requested"])
    for flag in ("store_io", "no_retry", "media_keep_forever"):
        data[flag] = bool(data[flag])
    data["backend_state"] = data.get("backend_state") or {}
    return RequestRecord(**data)


#: from this many requests ahead, positions come from a shared snapshot of the queue
DEEP_QUEUE = 1000
POSITION_SNAPSHOT_SECONDS = 1.0
_PRIORITY_SHIFT = 2**48


def _order(priority: Any, seq: Any) -> Any:
    """One sortable number for (priority, seq), in SQL or in Python."""
    shift = sa.literal(_PRIORITY_SHIFT, sa.BigInteger) if isinstance(priority, sa.ColumnElement) else _PRIORITY_SHIFT
    return priority * shift + seq


def position_query(record: RequestRecord) -> sa.Select[Any]:
    """The exact count of queued requests ahead of ``record``: two range counts on
    ix_requests_queue (lower priorities; the same priority and an earlier seq), so the
    cost grows with the number ahead, not with the depth of the queue behind it (an
    ``OR`` of the two would scan every queued request of the backend)."""

    def count(*ahead: Any) -> Any:
        return (
            sa.select(sa.func.count())
            .where(_T.status == Status.IN_QUEUE.value, _T.backend == record.backend, *ahead)
            .scalar_subquery()
        )

    return sa.select(count(_T.priority < record.priority) + count(_T.priority == record.priority, _T.seq < record.seq))


class RequestStore:
    def __init__(self, db: Database, *, default_key_concurrency: int | None = None) -> None:
        self.db = db
        #: running requests allowed to a key without a max_concurrent of its own (None: no limit)
        self.default_key_concurrency = default_key_concurrency
        #: backend -> (taken at, sorted order keys of its queued requests)
        self._positions: dict[str, tuple[float, list[int]]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    # -- submit and read ---------------------------------------------------------

    async def insert(self, *, also: Any = None, **values: Any) -> RequestRecord:
        """Persist a new IN_QUEUE request; returns it with its sequence number.
        ``also(conn, record)`` runs in the same transaction (admission, credit reserve)
        and may return the amount reserved."""
        values.setdefault("created_at", time.time())
        row = {
            "status": Status.IN_QUEUE.value,
            "attempts": 0,
            "cancel_requested": False,
            "backend_state": {},
            "version": 0,
            "store_io": True,
            "no_retry": False,
            "media_keep_forever": False,
            **values,
        }
        try:
            return await self._insert(row, also)
        except sa.exc.IntegrityError:
            if row.get("idempotency_key") is None:
                raise
            raise DuplicateIdempotencyKey(row["idempotency_key"]) from None

    async def _insert(self, row: dict[str, Any], also: Any) -> RequestRecord:
        async with self.db.write() as conn:
            result = await conn.execute(requests.insert().values(**row).returning(*requests.c))
            record = _record(result.one())
            await notify(conn, f"work:{record.backend}")
            if also is None:
                return record
            reserved = await also(conn, record)
            await conn.execute(requests.update().where(_T.seq == record.seq).values(reserved_micros=reserved))
            return replace(record, reserved_micros=reserved)

    async def get(self, request_id: str) -> RequestRecord | None:
        return await self._one(_T.id == request_id)

    async def find_idempotent(self, idempotency_key: str) -> RequestRecord | None:
        return await self._one(_T.idempotency_key == idempotency_key)

    async def _one(self, condition: Any) -> RequestRecord | None:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(requests).where(condition))).first()
        return _record(row) if row else None

    async def version(self, request_id: str) -> int | None:
        """The change counter alone: what stream followers poll across processes."""
        async with self.db.read() as conn:
            return (await conn.execute(sa.select(_T.version).where(_T.id == request_id))).scalar()

    async def queue_position(self, record: RequestRecord) -> int:
        """How many queued requests of the same backend will be claimed before this one.

        An index range count on (status, backend, priority, seq) is exact and cheap
        near the head, but grows with the number ahead (see ``position_query``). So once
        a count comes out deep, the queue's order keys are read in one index scan, in
        the background, and kept for ``POSITION_SNAPSHOT_SECONDS``: deep positions are
        then a binary search however many clients poll, at most that much out of date."""
        snapshot = self._positions.get(record.backend)
        if snapshot is not None and time.monotonic() - snapshot[0] < POSITION_SNAPSHOT_SECONDS:
            return bisect_left(snapshot[1], _order(record.priority, record.seq))
        async with self.db.read() as conn:
            exact = int((await conn.execute(position_query(record))).scalar() or 0)
        if exact >= DEEP_QUEUE and record.backend not in self._refreshing:
            task = asyncio.create_task(self._snapshot(record.backend), name=f"positions-{record.backend}")
            self._refreshing[record.backend] = task
            task.add_done_callback(lambda _: self._refreshing.pop(record.backend, None))
        return exact

    async def _snapshot(self, backend: str) -> None:
        keys = (
            sa.select(_order(sa.cast(_T.priority, sa.BigInteger), _T.seq))
            .where(_T.status == Status.IN_QUEUE.value, _T.backend == backend)
            .order_by(_T.priority, _T.seq)
        )
        async with self.db.read() as conn:
            self._positions[backend] = (time.monotonic(), list((await conn.execute(keys)).scalars()))

    async def counts_by_backend(self) -> dict[tuple[str, str], int]:
        """(status, backend) -> count of pending requests, for the metrics gauges."""
        query = (
            sa.select(_T.status, _T.backend, sa.func.count())
            .where(_T.status.in_([Status.IN_QUEUE.value, Status.IN_PROGRESS.value]))
            .group_by(_T.status, _T.backend)
        )
        async with self.db.read() as conn:
            return {(status, backend): n for status, backend, n in (await conn.execute(query)).all()}

    async def queue_length(self, backend: str) -> int:
        query = sa.select(sa.func.count()).where(
            _T.status == Status.IN_QUEUE.value, _T.backend == backend
        )
        async with self.db.read() as conn:
            return int((await conn.execute(query)).scalar() or 0)

    async def logs(self, request_id: str, *, after: int = 0) -> list[tuple[int, LogEntry]]:
        query = (
            sa.select(request_logs)
            .where(request_logs.c.request_id == request_id, request_logs.c.id > after)
            .order_by(request_logs.c.id)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [(r.id, LogEntry(timestamp=r.ts, message=r.message, level=r.level)) for r in rows]

    async def history(
        self,
        key_id: str | None,
        *,
        limit: int = 50,
        before_seq: int | None = None,
        status: Status | None = None,
        endpoint_id: str | None = None,
    ) -> list[RequestRecord]:
        """The newest requests of a key (all keys when ``key_id`` is None), optionally
        only those in one status or of one endpoint."""
        query = sa.select(requests).order_by(_T.seq.desc()).limit(limit)
        if key_id is not None:
            query = query.where(_T.key_id == key_id)
        if before_seq is not None:
            query = query.where(_T.seq < before_seq)
        if status is not None:
            query = query.where(_T.status == status.value)
        if endpoint_id is not None:
            query = query.where(_T.endpoint_id == endpoint_id)
        async with self.db.read() as conn:
            return [_record(r) for r in (await conn.execute(query)).all()]

    # -- workers ----------------------------------------------------------------

    async def claim(
        self, *, backends: Sequence[str], worker_id: str, lease_seconds: float, batch_limit: int = 1
    ) -> list[RequestRecord]:
        """Take the next queued request (priority, then FIFO) and, when it has a batch
        key, up to ``batch_limit - 1`` more queued requests with the same key."""
        now = time.time()
        async with self.db.write() as conn:
            head = await self._claim_where(
                conn, sa.and_(_T.backend.in_(backends)), worker_id, now + lease_seconds, now, 1
            )
            if not head or batch_limit <= 1 or head[0].batch_key is None:
                return head
            more = await self._claim_where(
                conn,
                sa.and_(_T.backend == head[0].backend, _T.batch_key == head[0].batch_key),
                worker_id,
                now + lease_seconds,
                now,
                batch_limit - 1,
            )
        return head + more

    async def _claim_where(
        self, conn: AsyncConnection, condition: Any, worker_id: str, lease: float, now: float, limit: int
    ) -> list[RequestRecord]:
        """Claim up to ``limit`` queued requests matching ``condition``, skipping keys
        already running ``max_concurrent`` requests (they wait, they are not refused)."""
        others = requests.alias("running")
        running = (
            sa.select(sa.func.count())
            .where(others.c.key_id == api_keys.c.id, others.c.status == Status.IN_PROGRESS.value)
            .scalar_subquery()
        )
        limit_of_key = (
            api_keys.c.max_concurrent
            if self.default_key_concurrency is None
            else sa.func.coalesce(api_keys.c.max_concurrent, self.default_key_concurrency)
        )
        saturated = sa.exists().where(api_keys.c.id == _T.key_id, limit_of_key.is_not(None), limit_of_key <= running)
        candidates = (
            sa.select(_T.seq, _T.key_id)
            .where(
                _T.status == Status.IN_QUEUE.value,
                condition,
                sa.or_(_T.start_deadline.is_(None), _T.start_deadline > now),
                ~saturated,
            )
            .order_by(_T.priority, _T.seq)
            .limit(limit)
        )
        if not self.db.is_sqlite:
            candidates = candidates.with_for_update(skip_locked=True, of=requests)
        chosen, taken = [], {}
        for seq, key_id in (await conn.execute(candidates)).all():
            if await self._within_limit(conn, key_id, taken.get(key_id, 0)):
                chosen.append(seq)
                taken[key_id] = taken.get(key_id, 0) + 1
        if not chosen:
            return []
        statement = (
            requests.update()
            .where(_T.seq.in_(chosen), _T.status == Status.IN_QUEUE.value)
            .values(
                status=Status.IN_PROGRESS.value,
                worker_id=worker_id,
                lease_expires_at=lease,
                attempts=_T.attempts + 1,
                started_at=sa.func.coalesce(_T.started_at, now),
                upstream_position=None,
                version=_T.version + 1,
            )
            .returning(*requests.c)
        )
        rows = (await conn.execute(statement)).all()
        return sorted((_record(r) for r in rows), key=lambda r: (r.priority, r.seq))

    async def _within_limit(self, conn: AsyncConnection, key_id: str | None, taken: int) -> bool:
        """Whether the key may start one more (``taken`` already chosen in this claim).
        On PostgreSQL the key's row is locked first, so concurrent claimers of one key
        serialise here; SQLite already has a single writer."""
        if key_id is None:
            return True
        query = sa.select(api_keys.c.max_concurrent).where(api_keys.c.id == key_id)
        limit = (await conn.execute(query if self.db.is_sqlite else query.with_for_update())).scalar()
        if limit is None:
            limit = self.default_key_concurrency
        if limit is None:
            return True
        running = await conn.execute(
            sa.select(sa.func.count()).where(_T.key_id == key_id, _T.status == Status.IN_PROGRESS.value)
        )
        return int(running.scalar() or 0) + taken < limit

    async def heartbeat(self, worker_id: str, request_ids: Iterable[str], lease_seconds: float) -> None:
        ids = list(request_ids)
        if not ids:
            return
        async with self.db.write() as conn:
            await conn.execute(
                requests.update()
                .where(_T.id.in_(ids), _T.worker_id == worker_id, _T.status == Status.IN_PROGRESS.value)
                .values(lease_expires_at=time.time() + lease_seconds)
            )

    async def cancel_requested(self, worker_id: str) -> set[str]:
        """Running requests of this worker whose client asked to cancel."""
        query = sa.select(_T.id).where(
            _T.worker_id == worker_id, _T.status == Status.IN_PROGRESS.value, _T.cancel_requested.is_(True)
        )
        async with self.db.read() as conn:
            return set((await conn.execute(query)).scalars())

    async def record_events(
        self,
        request_id: str,
        *,
        logs: Sequence[LogEntry] = (),
        progress: tuple[int, int] | None = None,
        preview_url: str | None = None,
        **position: int | None,
    ) -> None:
        """Fold a burst of backend events into the request in one transaction.
        ``upstream_position=N`` records a position in an upstream queue, ``=None``
        clears it (the upstream started the work); absent leaves it as it is."""
        values: dict[str, Any] = {"version": _T.version + 1}
        if progress is not None:
            values["progress_step"], values["progress_total"] = progress
        if preview_url is not None:
            values["preview_url"] = preview_url
        if "upstream_position" in position:
            values["upstream_position"] = position["upstream_position"]
        async with self.db.write() as conn:
            if logs:
                await conn.execute(
                    request_logs.insert(),
                    [{"request_id": request_id, "ts": e.timestamp, "level": e.level, "message": e.message} for e in logs],
                )
            await conn.execute(requests.update().where(_T.id == request_id).values(**values))
            await notify(conn, f"changed:{request_id}")

    async def save_backend_state(self, request_id: str, worker_id: str, state: dict[str, Any]) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                requests.update()
                .where(_T.id == request_id, _T.worker_id == worker_id)
                .values(backend_state=state)
            )

    # -- ending a request ----------------------------------------------------------

    async def complete(
        self,
        record: RequestRecord,
        *,
        result_status: int,
        result_body: Any,
        result_headers: dict[str, str] | None = None,
        error: str | None = None,
        error_type: str | None = None,
        inference_time: float | None = None,
        expect: Status = Status.IN_PROGRESS,
        worker_id: str | None = None,
        attempt: int | None = None,
        lease_expired_before: float | None = None,
        also: Any = None,
    ) -> RequestRecord | None:
        """Move to COMPLETED if the request is still as the caller saw it. Returns the
        completed record, or None when someone else ended it first. ``also`` is an async
        callable run in the same transaction (webhook outbox, usage ledger) so those
        happen exactly once with the state change. ``lease_expired_before`` (the reaper)
        also requires the lease to still be expired, so a heartbeat that renewed it
        after the reaper looked wins."""
        guard = [_T.id == record.id, _T.status == expect.value]
        if worker_id is not None:
            guard.append(_T.worker_id == worker_id)
        if attempt is not None:
            guard.append(_T.attempts == attempt)
        if lease_expired_before is not None:
            guard.append(_T.lease_expires_at < lease_expired_before)
        values = {
            "status": Status.COMPLETED.value,
            "completed_at": time.time(),
            "result_status": result_status,
            "result_body": result_body,
            "result_headers": result_headers,
            "error": error,
            "error_type": error_type,
            "inference_time": inference_time,
            "lease_expires_at": None,
            "version": _T.version + 1,
        }
        if not record.store_io:
            values["input"] = {}  # X-Fal-Store-IO: 0: the input is not kept past completion
        async with self.db.write() as conn:
            row = (await conn.execute(requests.update().where(*guard).values(**values).returning(*requests.c))).first()
            if row is None:
                return None
            done = _record(row)
            await notify(conn, f"changed:{done.id}")
            if also is not None:
                await also(conn, done)
            return done

    async def request_cancel(self, request_id: str) -> RequestRecord | None:
        """Flag a running request for cancellation; its worker stops at the next step."""
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    requests.update()
                    .where(_T.id == request_id, _T.status == Status.IN_PROGRESS.value)
                    .values(cancel_requested=True, version=_T.version + 1)
                    .returning(*requests.c)
                )
            ).first()
            if row is not None:
                await notify(conn, f"cancel:{request_id}")
        return _record(row) if row else None

    async def requeue(self, record: RequestRecord, *, lease_expired_before: float | None = None) -> bool:
        """Give a request back to the queue for another attempt (its worker gave up on
        it, or, with ``lease_expired_before``, its lease is still expired)."""
        guard = [_T.id == record.id, _T.status == Status.IN_PROGRESS.value, _T.attempts == record.attempts]
        if lease_expired_before is not None:
            guard.append(_T.lease_expires_at < lease_expired_before)
        async with self.db.write() as conn:
            result = await conn.execute(
                requests.update()
                .where(*guard)
                .values(
                    status=Status.IN_QUEUE.value,
                    worker_id=None,
                    lease_expires_at=None,
                    progress_step=None,
                    progress_total=None,
                    version=_T.version + 1,
                )
            )
            if result.rowcount == 1:
                await notify(conn, f"work:{record.backend}")
                await notify(conn, f"changed:{record.id}")
            return result.rowcount == 1

    # -- maintenance -------------------------------------------------------------

    async def expired_leases(self, now: float, limit: int = 100) -> list[RequestRecord]:
        return await self._fetch(_T.status == Status.IN_PROGRESS.value, _T.lease_expires_at < now, limit=limit)

    async def missed_deadlines(self, now: float, limit: int = 100) -> list[RequestRecord]:
        return await self._fetch(_T.status == Status.IN_QUEUE.value, _T.start_deadline < now, limit=limit)

    async def _fetch(self, *conditions: Any, limit: int) -> list[RequestRecord]:
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(requests).where(*conditions).limit(limit))).all()
        return [_record(r) for r in rows]

    async def purge_completed_before(self, cutoff: float, *, unstored_cutoff: float | None = None, limit: int = 1000) -> int:
        """Drop old requests and their logs (retention); requests sent with
        ``X-Fal-Store-IO: 0`` go once they are older than ``unstored_cutoff``."""
        old = _T.completed_at < cutoff
        if unstored_cutoff is not None:
            old = sa.or_(old, sa.and_(_T.store_io.is_(False), _T.completed_at < unstored_cutoff))
        async with self.db.write() as conn:
            ids = list(
                (await conn.execute(sa.select(_T.id).where(_T.status == Status.COMPLETED.value, old).limit(limit))).scalars()
            )
            if ids:
                await conn.execute(request_logs.delete().where(request_logs.c.request_id.in_(ids)))
                await conn.execute(requests.delete().where(_T.id.in_(ids)))
        return len(ids)
