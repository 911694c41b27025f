"""Every read and write of queued requests. Status changes happen here and nowhere
else, each one guarded by the state it expects (compare-and-swap), so a stale worker,
a reaper and a cancel can race without a request completing twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import fields
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from openfal.errors import InsufficientCredit, RateLimited
from openfal.models import LogEntry, RequestRecord, Status
from openfal.notify import Notifier
from openfal.store.changes import CHANNEL, SEQ_PLACEHOLDER, Notice, Transaction, Transactions
from openfal.store.claim_statements import NO_KEY, Claimable, ClaimStatements
from openfal.store.db import Database
from openfal.store.hinted_claims import GRACE_SECONDS, HintedClaims
from openfal.store.ledger import entry as ledger_entry
from openfal.store.schema import api_keys, queue_turns, request_logs, requests
from openfal.store.snapshot_claims import Candidate, candidates_from
from openfal.store.submit_statements import NotCovered, SubmitStatements
from openfal.store.views import QueueSnapshot, StatusCache

_FIELDS = {f.name for f in fields(RequestRecord)}
#: a new request's columns, before the submit's own values
_NEW_ROW = {
    "status": Status.IN_QUEUE.value,
    "attempts": 0,
    "cancel_requested": False,
    "backend_state": {},
    "version": 0,
    "store_io": True,
    "no_retry": False,
    "media_keep_forever": False,
}
_T = requests.c


class DuplicateIdempotencyKey(Exception):
    """Another submit with the same idempotency key committed first; nothing was stored."""


class LeftForHint(Exception):
    """A claim took a request whose runner hint another free worker advertises, within
    its grace: the claim was undone (rolled back), the request stays queued for it."""


class KeyQueueFull(Exception):
    """The key already has its ``max_queued`` requests waiting; nothing was stored."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def _record(row: sa.Row[Any]) -> RequestRecord:
    data = {k: v for k, v in row._mapping.items() if k in _FIELDS}
    data["status"] = Status(data["status"])
    data["cancel_requested"] = bool(data["cancel_requested"])
    for flag in ("store_io", "no_retry", "media_keep_forever"):
        data[flag] = bool(data[flag])
    data["backend_state"] = data.get("backend_state") or {}
    return RequestRecord(**data)


#: recent runs averaged for eta_seconds, and how long that average is kept
ETA_RUNS = 20
ETA_SECONDS = 10.0
#: an idle claimer with nothing queued sleeps this long unless new work wakes it first
#: (a notification lost while the change feed reconnects)
IDLE_CLAIM_SECONDS = 5.0
#: a claim's turns and its notices, one statement (PostgreSQL runs a data-modifying CTE
#: whether or not the query reads it)
_TURNS_AND_NOTICES = sa.text(
    "WITH turn AS (INSERT INTO queue_turns (backend, key_id, last_turn) SELECT b, k, :now FROM unnest(:backends, :keys) AS t(b, k)"
    " ON CONFLICT (backend, key_id) DO UPDATE SET last_turn = excluded.last_turn)"
    " SELECT pg_notify(:channel, payload) FROM unnest(:payloads) AS payload"
).bindparams(
    sa.bindparam("backends", type_=postgresql.ARRAY(sa.Text)),
    sa.bindparam("keys", type_=postgresql.ARRAY(sa.Text)),
    sa.bindparam("now", type_=sa.Float()),
    sa.bindparam("payloads", type_=postgresql.ARRAY(sa.Text)),
)
#: candidate keys asked for beyond what the claim wants, for keys whose queued
#: requests other claimers hold right now
CLAIM_SPARES = 3
#: a claim without a current snapshot of its backend's queue reads one at most this often
#: (the read costs as much as the queue is long; the claim meanwhile asks the database)
SNAPSHOT_READ_SECONDS = 10.0
#: the optional guards of a completion, by the name their value is bound under
_GUARDS = {
    "w_worker": _T.worker_id == sa.bindparam("w_worker"),
    "w_attempt": _T.attempts == sa.bindparam("w_attempt"),
    "w_lease": _T.lease_expires_at < sa.bindparam("w_lease", type_=sa.Float()),
}

#: a running request's columns as it goes back to the queue (requeued or handed back)
_BACK_IN_QUEUE = {
    "status": Status.IN_QUEUE.value,
    "worker_id": None,
    "lease_expires_at": None,
    "progress_step": None,
    "progress_total": None,
    "version": _T.version + 1,
}


def _left_for_hint(claimed: list[RequestRecord], leave: Collection[str], now: float) -> None:
    """A claim's first request is hinted to a runner another free worker advertises and
    is younger than the grace: ``LeftForHint`` undoes the claim (nothing of it is
    committed), whichever way its keys were chosen."""
    if claimed and claimed[0].runner_hint in leave and claimed[0].created_at > now - GRACE_SECONDS:
        raise LeftForHint(claimed[0].id)


def _turn_key(key_id: str | None) -> str:
    return key_id if key_id is not None else NO_KEY


def _entry(record: RequestRecord) -> list[Any]:
    """A request's place in its queue, as notifications carry it."""
    return [record.seq, record.priority, _turn_key(record.key_id), record.created_at]


class RequestStore:
    def __init__(self, db: Database, *, default_key_concurrency: int | None = None, notifier: Notifier | None = None) -> None:
        self.db = db
        #: running requests allowed to a key without a max_concurrent of its own (None: no limit)
        self.default_key_concurrency = default_key_concurrency
        #: told of every change this store commits (wakes streams, waits and workers)
        self.notifier = notifier or Notifier()
        #: what status polls read (see store/views.py); kept current by every commit's notices
        self.views = StatusCache()
        self.changes = Transactions(db, self.views, self.notifier)
        insert = (sqlite.insert if db.is_sqlite else postgresql.insert)(queue_turns)
        self._submits = SubmitStatements(sqlite=db.is_sqlite)
        self._claims = ClaimStatements(sqlite=db.is_sqlite, default_key_concurrency=default_key_concurrency)
        self._hinted = HintedClaims(sqlite=db.is_sqlite, default_key_concurrency=default_key_concurrency)
        #: one statement for every claim's turns (its parameters apart), compiled once
        self._upsert_turn = insert.on_conflict_do_update(
            index_elements=["backend", "key_id"], set_={"last_turn": insert.excluded.last_turn}
        )
        #: completion statements by their guards (see ``_completion``)
        self._completions: dict[tuple[tuple[str, ...], bool], Any] = {}
        #: request id -> (fill token, the read in flight) for ``view``
        self._reads: dict[str, tuple[object, asyncio.Future[RequestRecord | None]]] = {}
        #: backend -> (epoch, generation, the read in flight) of a queue snapshot
        self._refreshing: dict[str, tuple[int, int, asyncio.Task[QueueSnapshot]]] = {}
        #: backend -> (taken at, mean seconds of its recent runs)
        self._run_seconds: dict[str, tuple[float, float | None]] = {}
        #: backend -> when a claim may next read its queue snapshot (``_claim_snapshot``)
        self._claim_reads: dict[str, float] = {}
        #: the keys at their limit as the last claim from a snapshot found them
        self._saturated: set[str] = set()

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """A write transaction other writes can join (a submit's credit reserve, an
        ending's settlement and webhook): what they change is told once it commits."""
        return self.changes.begin()

    # -- submit and read ---------------------------------------------------------

    async def insert(
        self,
        *,
        tx: Transaction | None = None,
        max_queued: int | None = None,
        rpm: int | None = None,
        reserve: int | None = None,
        **values: Any,
    ) -> RequestRecord:
        """Persist a new IN_QUEUE request; returns it with its sequence number. With
        ``tx``, in the caller's transaction. ``reserve``: credit taken from its key's
        balance for it, with its ledger row (InsufficientCredit when the balance is
        short; None: no reserve and no row, for requests openfal makes itself). A key
        that already has ``max_queued`` requests waiting is refused (KeyQueueFull), one
        that submitted more than ``rpm`` in the last minute too (RateLimited); both
        counts include this one. Without those limits it is one statement (see
        submit_statements.py)."""
        values.setdefault("created_at", time.time())
        row = {**_NEW_ROW, "key_id": None, **values, "reserved_micros": reserve}
        key_id = row["key_id"]
        entry = None if reserve is None else ledger_entry(key_id, row["id"], row["endpoint_id"], "reserve", -reserve)
        checked = key_id is not None and (max_queued is not None or rpm is not None)
        async with self.changes.begin(tx, one_statement=not checked) as t:
            try:
                stored = await self._submits.run(t.conn, row, entry, notify=None if self.db.is_sqlite else self._notify(row))
            except sa.exc.IntegrityError:
                if row.get("idempotency_key") is None:
                    raise
                raise DuplicateIdempotencyKey(row["idempotency_key"]) from None
            except NotCovered:
                raise InsufficientCredit() from None
            record = _record(stored)
            if max_queued is not None and record.key_id is not None:
                await self._check_queued(t.conn, record.key_id, max_queued)
            if rpm is not None and record.key_id is not None:
                await self._check_rate(t.conn, record.key_id, rpm)
            if self.db.is_sqlite:  # other processes learn of it from data_version
                t.notice("work", record.backend, add=[_entry(record)])
            else:
                t.sent(Notice("work", record.backend, {"add": [_entry(record)]}))
            t.after_commit(lambda: self.views.put(record))  # its first status poll reads nothing
        return record

    def _notify(self, row: dict[str, Any]) -> dict[str, str]:
        """PostgreSQL's notice of a new request, sent by its own INSERT statement: the
        seq is the INSERT's to choose, so the statement puts it in for the placeholder."""
        added = [SEQ_PLACEHOLDER, row["priority"], _turn_key(row["key_id"]), row["created_at"]]
        return {"channel": CHANNEL, "payload": Notice("work", row["backend"], {"add": [added]}).payload(self.views.origin)}

    async def _check_rate(self, conn: AsyncConnection, key_id: str, rpm: int) -> None:
        recent = await conn.execute(sa.select(sa.func.count()).where(_T.key_id == key_id, _T.created_at > time.time() - 60))
        if int(recent.scalar() or 0) > rpm:
            raise RateLimited()

    async def _check_queued(self, conn: AsyncConnection, key_id: str, limit: int) -> None:
        """Counted after the insert (so it includes this request), under the key's row
        lock on PostgreSQL, so concurrent submits of one key cannot both slip in."""
        if not self.db.is_sqlite:
            await conn.execute(sa.select(api_keys.c.id).where(api_keys.c.id == key_id).with_for_update())
        queued = await conn.execute(
            sa.select(sa.func.count()).where(_T.key_id == key_id, _T.status == Status.IN_QUEUE.value)
        )
        if int(queued.scalar() or 0) > limit:
            raise KeyQueueFull(limit)

    async def get(self, request_id: str) -> RequestRecord | None:
        return await self._one(_T.id == request_id)

    async def view(self, request_id: str) -> RequestRecord | None:
        """The request as status polls see it: from memory when this process knows it
        is current (store/views.py), else read (and kept when it may be). Concurrent
        polls share one read, unless a change landed after it began."""
        record = self.views.record(request_id)
        if record is not None:
            return record
        flight = self._reads.get(request_id)
        if flight is None or not self.views.filling(request_id, flight[0]):
            token = self.views.begin_fill(request_id)
            flight = (token, asyncio.ensure_future(self._read_view(request_id, token)))
            self._reads[request_id] = flight
        return await asyncio.shield(flight[1])

    async def _read_view(self, request_id: str, token: object) -> RequestRecord | None:
        try:
            record = await self.get(request_id)
            self.views.fill(request_id, token, record)
            return record
        finally:
            if self._reads.get(request_id, (None,))[0] is token:
                del self._reads[request_id]

    @property
    def changes_pushed(self) -> bool:
        """Whether every committed change reaches this process as it happens (waiters
        may then sleep until woken instead of polling)."""
        return self.views.live

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
        """How many queued requests of the same backend will be claimed before this one,
        in claim order (priority, then round-robin across keys, then FIFO), from the
        backend's queue snapshot: read again once the queue changed, shared by every
        poll until it changes again (a deep queue's for up to a second)."""
        snap = self.views.snapshot(record.backend)
        if snap is None:
            snap = await self._fresh_snapshot(record.backend)
        return snap.position(record.priority, _turn_key(record.key_id), record.seq)

    async def _fresh_snapshot(self, backend: str) -> QueueSnapshot:
        """One read per backend at a time: a poll joins the read in flight (the changes
        landing meanwhile are applied to what it reads), unless changes may have been
        missed since it began; then it starts its own."""
        epoch, generation = self.views.epoch(backend), self.views.generation
        flight = self._refreshing.get(backend)
        if flight is None or flight[1] != generation or flight[2].done():
            token = self.views.begin_read(backend)
            task = asyncio.create_task(self._read_snapshot(backend, epoch, generation, token), name=f"queue-{backend}")
            flight = (epoch, generation, task)
            self._refreshing[backend] = flight
        return await asyncio.shield(flight[2])

    async def _read_snapshot(self, backend: str, epoch: int, generation: int, token: object) -> QueueSnapshot:
        queued = sa.select(_T.seq, _T.priority, _T.key_id, _T.created_at).where(
            _T.status == Status.IN_QUEUE.value, _T.backend == backend
        )
        turns = sa.select(queue_turns.c.key_id, queue_turns.c.last_turn).where(queue_turns.c.backend == backend)
        try:
            async with self.db.read() as conn:
                rows = [(seq, priority, _turn_key(key), created) for seq, priority, key, created in (await conn.execute(queued)).all()]
                last_turns = {key: at for key, at in (await conn.execute(turns)).all()}
            snap = QueueSnapshot(rows, last_turns, epoch=epoch, generation=generation)
            self.views.keep_snapshot(backend, snap, token)
            return snap
        finally:
            self.views.end_read(backend, token)

    async def recent_run_seconds(self, backend: str) -> float | None:
        """Mean run time of the backend's last ``ETA_RUNS`` successful requests (None
        before there are any), read at most every ``ETA_SECONDS`` (and again after this
        process completes the first one)."""
        cached = self._run_seconds.get(backend)
        if cached is not None and time.monotonic() - cached[0] < ETA_SECONDS:
            return cached[1]
        recent = (
            sa.select((_T.completed_at - _T.started_at).label("run"))
            .where(_T.backend == backend, _T.status == Status.COMPLETED.value, _T.error.is_(None), _T.started_at.is_not(None))
            .order_by(_T.completed_at.desc())
            .limit(ETA_RUNS)
            .subquery()
        )
        async with self.db.read() as conn:
            mean = (await conn.execute(sa.select(sa.func.avg(recent.c.run)))).scalar()
        self._run_seconds[backend] = (time.monotonic(), float(mean) if mean is not None else None)
        return self._run_seconds[backend][1]

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
        self,
        *,
        backends: Sequence[str],
        worker_id: str,
        lease_seconds: float,
        batch_limit: int = 1,
        runs: int = 1,
        endpoints: Collection[str] | None = None,
        hints: Sequence[str] = (),
        leave: Collection[str] = (),
    ) -> list[RequestRecord]:
        """Take the next queued request and, when it has a batch key, up to
        ``batch_limit - 1`` more queued requests with the same key. The next one is by
        priority first, then the API key that has waited longest for its turn (since
        its last claim, or since its oldest queued request came if that is later), then
        FIFO: round-robin across keys, so one key's burst does not hold back another
        key's single request. A queue this process knows to be empty (its snapshot is
        current) is not asked: an idle slot costs no write transaction. ``endpoints``
        (a worker pool's): only requests for these (a batch shares its first's endpoint).
        ``hints`` (what this worker advertises): a queued request with one of them as its
        runner hint is taken first; ``leave`` (hints free workers elsewhere advertise): a
        request hinted so, younger than the grace, is not taken (``LeftForHint``, the
        claim rolled back), see hinted_claims.py; read when the claim checks what it took
        (the worker's is a live view of what it hears). ``runs`` (a worker's free slots, for
        a backend that does not batch, with no hints either way): up to that many
        requests, each run alone, taken as that many claims in a row would take them
        (one per key in claim order first), from one candidate query."""
        if all(self.views.known_empty(backend) for backend in backends):
            return []
        # read before the first await: ``leave`` may be the worker's live view (LeftToOthers)
        alone = runs == 1 or (batch_limit == 1 and not hints and not leave)
        now = time.time()
        values = {"now": now, "worker": worker_id, "lease": now + lease_seconds}
        first: dict[str, Any] = {**values, "backends": list(backends)}
        claimable = self._claims.backends
        if endpoints is not None:
            claimable = self._claims.pool
            first["endpoints"] = sorted(endpoints)
        snap = await self._claim_snapshot(backends) if endpoints is None and not hints else None
        async with self.changes.begin(claim=True) as tx:
            claimed = []
            if hints:
                hinted = self._hinted.candidates if endpoints is None else self._hinted.candidates_of_pool
                claimed = await self._claim_chosen(tx.conn, hinted, {**first, "hints": sorted(hints)})
            all_held = False
            if not claimed and snap is not None:
                known, self._saturated = await candidates_from(
                    tx.conn, snap, self._claims.limits_of, runs + CLAIM_SPARES, self.default_key_concurrency, self._saturated
                )
                missed: list[str | None] = []
                claimed = await self._claim_from(tx.conn, claimable, first, runs, known, missed)
                for key in missed:
                    snap.drop_head(_turn_key(key))
                _left_for_hint(claimed, leave, now)
                # every key the current snapshot holds waiting runs its limit: the candidates
                # query would find the same, at a probe per waiting key (a worker wakes at every
                # submit to such a queue: the probes were most of a submit's cost at depth)
                all_held = not known
            if not claimed and not all_held:
                assert alone, "several runs are claimed alone"
                claimed = await self._claim_next(tx.conn, claimable, first, runs)
                _left_for_hint(claimed, leave, now)
            if claimed and batch_limit > 1 and claimed[0].batch_key is not None:
                batch = {**values, "batch_backend": claimed[0].backend, "batch_key_of": claimed[0].batch_key}
                claimed += await self._claim_next(tx.conn, self._claims.batch, batch, batch_limit - 1)
            if claimed:
                await self._take_turns(tx, claimed, now)
                tx.after_commit(partial(self.views.put_all, claimed))
        return claimed

    async def _claim_snapshot(self, backends: Sequence[str]) -> QueueSnapshot | None:
        """This process's current snapshot of the one backend's queue, for a claim to
        choose its keys from (snapshot_claims.py); read when there is none, at most every
        ``SNAPSHOT_READ_SECONDS``. None (the claim asks the database): several backends,
        no live change feed, or no current snapshot to be had."""
        if len(backends) != 1 or not self.views.live:
            return None
        backend = backends[0]
        snap = self.views.current_snapshot(backend)
        if snap is None and time.monotonic() >= self._claim_reads.get(backend, 0.0):
            self._claim_reads[backend] = time.monotonic() + SNAPSHOT_READ_SECONDS
            await self._fresh_snapshot(backend)
            snap = self.views.current_snapshot(backend)
        return snap

    async def hinted_elsewhere(self, *, backends: Sequence[str], hints: Collection[str], endpoints: Collection[str] | None = None) -> float | None:
        """When the oldest queued request still within its grace came (None: none) that
        has one of ``hints`` (other workers') as its runner hint: a worker without them
        leaves it to them until ``hinted_claims.GRACE_SECONDS`` after that."""
        now = time.time()
        values: dict[str, Any] = {"now": now, "backends": list(backends), "hints": sorted(hints), "since": now - GRACE_SECONDS}
        statement = self._hinted.waiting
        if endpoints is not None:
            statement, values["endpoints"] = self._hinted.waiting_of_pool, sorted(endpoints)
        async with self.db.read() as conn:
            return (await conn.execute(statement, values)).scalar()

    async def _take_turns(self, tx: Transaction, claimed: list[RequestRecord], now: float) -> None:
        """Record that these requests' keys just had their turn on this backend, and
        tell of the claim. On PostgreSQL both in one statement (``_TURNS_AND_NOTICES``):
        a round trip fewer in every claim."""
        turns = sorted({(r.backend, _turn_key(r.key_id)) for r in claimed})
        notices = [
            Notice("queue", claimed[0].backend, {"rm": [_entry(r) for r in claimed], "turn": now}),
            Notice("changed", ",".join(r.id for r in claimed)),
        ]
        if self.db.is_sqlite:
            await tx.conn.execute(self._upsert_turn, [{"backend": backend, "key_id": key, "last_turn": now} for backend, key in turns])
            tx.notices.extend(notices)
            return
        values = {
            "backends": [backend for backend, _ in turns], "keys": [key for _, key in turns], "now": now,
            "channel": CHANNEL, "payloads": [notice.payload(self.views.origin) for notice in notices],
        }  # fmt: skip
        await tx.conn.execute(_TURNS_AND_NOTICES, values)
        for notice in notices:
            tx.sent(notice)

    async def _claim_next(self, conn: AsyncConnection, claimable: Claimable, values: dict[str, Any], limit: int) -> list[RequestRecord]:
        """Claim up to ``limit`` requests: one from each candidate key in claim order,
        then, while more are wanted (a batch, or several runs), the rest shared evenly
        among the keys that still have some, as that many claims in a row would take
        them; keys already running ``max_concurrent`` requests are skipped (they wait,
        they are not refused). A key whose requests other claimers hold yields nothing
        and the next key is asked: so the spare candidates."""
        rows = (await conn.execute(claimable.candidates, {**values, "limit": limit + CLAIM_SPARES})).all()
        return await self._claim_from(conn, claimable, values, limit, [(seq, key, limited) for seq, key, limited in rows])

    async def _claim_from(
        self, conn: AsyncConnection, claimable: Claimable, values: dict[str, Any], limit: int, rows: Sequence[Candidate], missed: list[str | None] | None = None
    ) -> list[RequestRecord]:
        """``_claim_next``'s taking, from candidates in claim order (the candidates
        query's, or a queue snapshot's, snapshot_claims.py); ``missed`` gets the keys
        asked in the first round that had nothing to take."""
        claimed: list[RequestRecord] = []
        taken: dict[str | None, int] = {}
        live = list(rows)
        share = 1  # the first round: one each
        while live and len(claimed) < limit:
            more = []
            for row in live:
                _seq, key_id, limited = row
                wanted = min(share, limit - len(claimed))
                if wanted <= 0:
                    break
                if key_id is not None and limited is not None:
                    # only a limited key's count is checked (under its row lock on PostgreSQL)
                    wanted = min(wanted, await self._room(conn, key_id, taken.get(key_id, 0)))
                if wanted <= 0:
                    continue
                take = claimable.take_of_no_key if key_id is None else claimable.take_of_key
                got = await self._take(conn, take, {**values, "take_key": key_id, "n": wanted})
                taken[key_id] = taken.get(key_id, 0) + len(got)
                claimed += got
                if not got and share == 1 and missed is not None:
                    missed.append(key_id)
                if len(got) == wanted:  # it may have more
                    more.append(row)
            live = more
            share = max(1, (limit - len(claimed)) // max(1, len(live)))
        return sorted(claimed, key=lambda r: (r.priority, r.seq))

    async def _claim_chosen(self, conn: AsyncConnection, candidates: Any, values: dict[str, Any]) -> list[RequestRecord]:
        """Claim the one request ``candidates`` names (the runner-hint pre-claim: a
        particular request, not a key's next), unless its key is at its limit."""
        chosen: list[int] = []
        for seq, key_id, limited in (await conn.execute(candidates, {**values, "limit": 1})).all():
            if key_id is None or limited is None or await self._room(conn, key_id, 0) > 0:
                chosen.append(seq)
        if not chosen:
            return []
        return await self._take(conn, self._claims.take_chosen, {**values, "chosen": chosen})

    async def _take(self, conn: AsyncConnection, statement: Any, values: dict[str, Any]) -> list[RequestRecord]:
        rows = (await conn.execute(statement, values)).all()
        return sorted((_record(r) for r in rows), key=lambda r: (r.priority, r.seq))

    async def _room(self, conn: AsyncConnection, key_id: str, taken: int) -> int:
        """How many more requests the key may start (``taken`` already in this claim)."""
        limit = (await conn.execute(self._claims.key_limit, {"key_id": key_id})).scalar()
        if limit is None:
            limit = self.default_key_concurrency
        if limit is None:
            return 1 << 30
        running = await conn.execute(self._claims.key_running, {"key_id": key_id})
        return limit - int(running.scalar() or 0) - taken

    async def idle_seconds(self, backend: str, poll_seconds: float) -> float:
        """How long a claimer that found nothing may sleep before looking again: while
        the change feed is live and nothing is queued, until new work wakes it (or
        ``IDLE_CLAIM_SECONDS``); else one poll interval (requests wait for their key's
        limit, or changes would go unnoticed)."""
        if not self.views.live:
            return poll_seconds
        try:  # the snapshot read here also lets the next claims skip an empty queue
            snap = self.views.snapshot(backend) or await self._fresh_snapshot(backend)
        except Exception:  # the database is away: the claim that follows reports it
            return poll_seconds
        return poll_seconds if snap.size else IDLE_CLAIM_SECONDS

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
        async with self.changes.begin() as tx:
            if logs:
                await tx.conn.execute(
                    request_logs.insert(),
                    [{"request_id": request_id, "ts": e.timestamp, "level": e.level, "message": e.message} for e in logs],
                )
            await tx.conn.execute(requests.update().where(_T.id == request_id).values(**values))
            tx.notice("changed", request_id)

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
        tx: Transaction | None = None,
    ) -> RequestRecord | None:
        """Move to COMPLETED if the request is still as the caller saw it. Returns the
        completed record, or None when someone else ended it first. With ``tx``, in the
        caller's transaction (webhook outbox, usage ledger), so those happen exactly once
        with the state change. ``lease_expired_before`` (the reaper) also requires the
        lease to still be expired, so a heartbeat that renewed it after the reaper
        looked wins."""
        guards = {"w_worker": worker_id, "w_attempt": attempt, "w_lease": lease_expired_before}
        guards = {name: value for name, value in guards.items() if value is not None}
        statement = self._completion(tuple(guards), drop_input=not record.store_io)
        values = {
            "w_id": record.id,
            "w_status": expect.value,
            **guards,
            "completed_at": time.time(),
            "result_status": result_status,
            "result_body": result_body,
            "result_headers": result_headers,
            "error": error,
            "error_type": error_type,
            "inference_time": inference_time,
        }
        async with self.changes.begin(tx) as t:
            row = (await t.conn.execute(statement, values)).first()
            if row is None:
                return None
            done = _record(row)
            t.notice("changed", done.id)
            if expect is Status.IN_QUEUE:
                t.notice("queue", done.backend, rm=[_entry(done)])
            t.after_commit(partial(self._completed, done))
        return done

    def _completion(self, guards: tuple[str, ...], *, drop_input: bool) -> Any:
        """The guarded move to COMPLETED, built once for each set of guards (the values
        are bound at execution: the SET clause names what they name)."""
        key = (guards, drop_input)
        statement = self._completions.get(key)
        if statement is None:
            where = [_T.id == sa.bindparam("w_id"), _T.status == sa.bindparam("w_status")]
            where += [_GUARDS[name] for name in guards]
            values: dict[str, Any] = {"status": Status.COMPLETED.value, "lease_expires_at": None, "version": _T.version + 1}
            if drop_input:
                values["input"] = {}  # X-Fal-Store-IO: 0: the input is not kept past completion
            statement = self._completions[key] = requests.update().where(*where).values(**values).returning(*requests.c)
        return statement

    def _completed(self, done: RequestRecord) -> None:
        self.views.put(done)
        if self._run_seconds.get(done.backend, (0.0, 0.0))[1] is None:
            del self._run_seconds[done.backend]  # the first timed run: no need to wait for the next read

    async def drop_payloads(self, request_id: str) -> RequestRecord | None:
        """fal's payload deletion: forget a completed request's input and result (its
        result then answers 410, as one sent with ``X-Fal-Store-IO: 0`` after expiry);
        None when it is not completed. Every process's status view drops them too."""
        async with self.changes.begin() as tx:
            row = (
                await tx.conn.execute(
                    requests.update()
                    .where(_T.id == request_id, _T.status == Status.COMPLETED.value)
                    .values(input={}, result_body=None, version=_T.version + 1)
                    .returning(*requests.c)
                )
            ).first()
            if row is None:
                return None
            done = _record(row)
            tx.notice("changed", done.id)
            tx.after_commit(partial(self.views.put, done))
        return done

    async def request_cancel(self, request_id: str) -> RequestRecord | None:
        """Flag a running request for cancellation; its worker stops at the next step
        (told at once: its process's cancel hook runs as this commits)."""
        async with self.changes.begin() as tx:
            row = (
                await tx.conn.execute(
                    requests.update()
                    .where(_T.id == request_id, _T.status == Status.IN_PROGRESS.value)
                    .values(cancel_requested=True, version=_T.version + 1)
                    .returning(*requests.c)
                )
            ).first()
            if row is not None:
                tx.notice("cancel", request_id)
        return _record(row) if row is not None else None

    async def requeue(self, record: RequestRecord, *, lease_expired_before: float | None = None) -> bool:
        """Give a request back to the queue for another attempt (its worker gave up on
        it, or, with ``lease_expired_before``, its lease is still expired); a worker is
        woken for it."""
        guard = [_T.id == record.id, _T.status == Status.IN_PROGRESS.value, _T.attempts == record.attempts]
        if lease_expired_before is not None:
            guard.append(_T.lease_expires_at < lease_expired_before)
        async with self.changes.begin() as tx:
            result = await tx.conn.execute(
                requests.update()
                .where(*guard)
                .values(**_BACK_IN_QUEUE)
            )
            if result.rowcount == 1:
                tx.notice("work", record.backend, add=[_entry(record)])
                tx.notice("changed", record.id)
        return result.rowcount == 1

    async def hand_back(self, record: RequestRecord, worker_id: str) -> bool:
        """Give back a request this worker claimed and did not finish (it is shutting
        down): queued again as if never claimed, at once instead of at lease expiry. The
        attempt is not counted (a drain is no failure of the request), and its key's turn
        on the backend is given back too, so it is claimed before every request that was
        behind it when it was claimed. False when it is no longer this attempt's."""
        guard = [
            _T.id == record.id,
            _T.status == Status.IN_PROGRESS.value,
            _T.worker_id == worker_id,
            _T.attempts == record.attempts,
        ]
        first_attempt = record.attempts <= 1
        async with self.changes.begin() as tx:
            result = await tx.conn.execute(
                requests.update()
                .where(*guard)
                .values(
                    **_BACK_IN_QUEUE,
                    preview_url=None,
                    attempts=_T.attempts - 1,
                    # its queue wait goes on: the first start is yet to come
                    started_at=None if first_attempt else _T.started_at,
                )
            )
            if result.rowcount != 1:
                return False
            turns = queue_turns.c
            least = sa.func.min if self.db.is_sqlite else sa.func.least
            await tx.conn.execute(
                queue_turns.update()
                .where(turns.backend == record.backend, turns.key_id == _turn_key(record.key_id))
                .values(last_turn=least(turns.last_turn, record.created_at))
            )
            # no delta: every process's snapshot of this queue is read again (the turn moved back)
            tx.notice("work", record.backend)
            tx.notice("changed", record.id)
        return True

    # -- maintenance -------------------------------------------------------------

    async def held_by(self, worker_id: str, limit: int = 1000) -> list[RequestRecord]:
        """The requests ``worker_id`` is running (a supervisor releases them when that
        worker's process dies, instead of waiting for their leases to lapse)."""
        return await self._fetch(_T.status == Status.IN_PROGRESS.value, _T.worker_id == worker_id, limit=limit)

    async def expired_leases(self, now: float, limit: int = 100) -> list[RequestRecord]:
        return await self._fetch(_T.status == Status.IN_PROGRESS.value, _T.lease_expires_at < now, limit=limit)

    async def missed_deadlines(self, now: float, limit: int = 100) -> list[RequestRecord]:
        return await self._fetch(_T.status == Status.IN_QUEUE.value, _T.start_deadline < now, limit=limit)

    async def next_reap_at(self) -> float | None:
        """When the next lease runs out or start deadline passes (None: neither is due
        ever: nothing runs and nothing queued has a deadline), in one read."""
        lease = sa.select(sa.func.min(_T.lease_expires_at)).where(_T.status == Status.IN_PROGRESS.value).scalar_subquery()
        deadline = sa.select(sa.func.min(_T.start_deadline)).where(_T.status == Status.IN_QUEUE.value).scalar_subquery()
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(lease, deadline))).one()
        times = [float(t) for t in row if t is not None]
        return min(times) if times else None

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
        async with self.changes.begin() as tx:
            ids = list(
                (await tx.conn.execute(sa.select(_T.id).where(_T.status == Status.COMPLETED.value, old).limit(limit))).scalars()
            )
            if ids:
                await tx.conn.execute(request_logs.delete().where(request_logs.c.request_id.in_(ids)))
                await tx.conn.execute(requests.delete().where(_T.id.in_(ids)))
            tx.after_commit(lambda: self.views.forget(ids))
        return len(ids)
