"""The statements of a queue claim, built once per store with every value a bound
parameter.

**Fair share from an index, whatever the queue's depth.** The claim order is priority,
then the key that has waited longest for its turn, then FIFO within a key. Ordering
every queued request that way costs as much as the queue is long (23 ms a claim at
10,000 queued on PostgreSQL). It need not: a key's next request is its *head* (its
first by priority, then seq), so the choice is among heads only, one per key, each
found by one probe of ``ix_requests_queue`` (status, backend, key_id, priority, seq):

1. ``keys``: the keys with queued requests, a recursive skip scan over that index
   (each step: the next key_id after the last, one probe; requests without a key are
   the one extra head);
2. each key's head: its first queued request in (priority, seq) order, one probe;
3. the heads ordered by priority, the time each key has waited for its turn
   (``queue_turns``), seq; keys already running their limit are left out.

So a claim costs one probe per key with work queued (not per request queued): flat from
100 to 100,000 queued. The plans are pinned by tests/store/test_claim_plans.py on both
databases, with and without fresh statistics.

Candidates are chosen without locks (locking every key's head would write a lock into
each); the store then takes the chosen keys' next requests (``take_of_key``), skipping
rows another claimer locked (PostgreSQL ``FOR UPDATE SKIP LOCKED``), so concurrent
claimers of one busy key each take a different request of it.

**Adding a filter**: write its conditions as a function of the table alias it is
given (``of_pool`` below: a worker pool's ``endpoint_id IN (...)``, ``openfal worker
--models``) and make a ``Claimable`` of it (``self.pool``); the conditions then narrow
the key scan, every head and the take alike (all must see the same rows, or a key would
be found whose head is missing), and its values are bound with the claim's
(``"endpoints": [...]``, ``RequestStore.claim``). A condition on a column outside the
index is checked on each probed row, so a key whose head does not match walks on to
its first row that does.

Values (named apart from the columns, as UPDATE statements require): ``backends`` (a
list), ``endpoints`` (a list: a worker pool's), ``batch_backend`` and ``batch_key_of`` (a batch's followers), ``now``, ``limit``,
``worker``, ``lease``, ``take_key`` and ``n`` (a chosen key, and how many of its
requests to take), ``key_id`` (a key's limit and running count).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from openfal.models import Status
from openfal.store.schema import api_keys, queue_turns, requests

_T = requests.c
#: a queue turn's key for requests without an API key
NO_KEY = ""

#: what a claim reads of each key's head
HEAD_COLUMNS = ("seq", "key_id", "priority", "created_at", "backend")
#: the conditions a queued request must meet to be claimed, against a table alias
Where = Callable[[Any], list[Any]]
#: written into the statement, not bound: a prepared statement's generic plan then knows
#: the status it probes and that each probe takes one row
QUEUED = sa.literal(Status.IN_QUEUE.value, literal_execute=True)
RUNNING = sa.literal(Status.IN_PROGRESS.value, literal_execute=True)
ONE = sa.literal(1, literal_execute=True)


def of_backends(t: Any) -> list[Any]:
    return [t.c.backend.in_(sa.bindparam("backends", expanding=True))]


def of_pool(t: Any) -> list[Any]:
    """A worker pool's requests (``openfal worker --models``): only its endpoints,
    bound as ``endpoints``."""
    return [*of_backends(t), t.c.endpoint_id.in_(sa.bindparam("endpoints", expanding=True))]


def of_batch(t: Any) -> list[Any]:
    """A batch's followers: the same backend and batch key as the request just claimed."""
    return [t.c.backend == sa.bindparam("batch_backend"), t.c.batch_key == sa.bindparam("batch_key_of")]


@dataclass(frozen=True, slots=True)
class Claimable:
    """One kind of claim's statements: its candidates (each key's head, in claim order),
    and the take of a chosen key's next ``n`` requests (keyed, and without a key)."""

    candidates: Any
    take_of_key: Any
    take_of_no_key: Any


class ClaimStatements:
    def __init__(self, *, sqlite: bool, default_key_concurrency: int | None) -> None:
        self.sqlite = sqlite
        self.default_key_concurrency = default_key_concurrency
        now = sa.bindparam("now", type_=sa.Float())
        #: the next requests of some backends
        self.backends = self._claimable(of_backends, now)
        #: the same for a worker pool: only its endpoints
        self.pool = self._claimable(of_pool, now)
        #: requests sharing a batch key with the one just claimed
        self.batch = self._claimable(of_batch, now)
        #: the requests of ``chosen`` seqs (the runner-hint pre-claim, store/hinted_claims.py)
        self.take_chosen = self._take(_T.seq.in_(sa.bindparam("chosen", expanding=True)), now)
        own_limit = sa.select(api_keys.c.max_concurrent).where(api_keys.c.id == sa.bindparam("key_id"))
        #: a key's own limit (its row locked on PostgreSQL: claimers of one key take turns)
        self.key_limit = own_limit if sqlite else own_limit.with_for_update()
        self.key_running = sa.select(sa.func.count()).where(
            _T.key_id == sa.bindparam("key_id"), _T.status == Status.IN_PROGRESS.value
        )
        self.limits_of = self._limits_of()

    def _claimable(self, condition: Where, now: Any) -> Claimable:
        where = self.claimable(condition)

        def take(own: Any) -> Any:
            """A key's next ``n`` requests in (priority, seq) order: on PostgreSQL
            those another claimer holds are skipped, so concurrent claimers of one busy
            key each take a different request of it."""
            in_time = sa.or_(_T.start_deadline.is_(None), _T.start_deadline > now)
            rows = sa.select(_T.seq).where(*where(requests), own, in_time).order_by(_T.key_id, _T.priority, _T.seq)
            # written in (a few statements: n is 1 up to a batch): a bound LIMIT is 10 % of
            # the table to a generic plan, which then hashes the whole table to join it
            rows = rows.limit(sa.bindparam("n", type_=sa.Integer(), literal_execute=True))
            if self.sqlite:  # one writer: the rows cannot change between choice and update
                return self._take(_T.seq.in_(rows.scalar_subquery()), now, guarded=False)
            # chosen once, in a CTE: as ``IN (subquery)`` the planner may run the locking
            # subquery again for each row it updates, each time taking another request
            chosen = rows.with_for_update(skip_locked=True).cte("chosen")
            return self._take(_T.seq == chosen.c.seq, now)

        return Claimable(
            candidates=self._candidates(condition, now),
            take_of_key=take(_T.key_id == sa.bindparam("take_key")),
            take_of_no_key=take(_T.key_id.is_(None)),
        )

    @staticmethod
    def claimable(where: Where) -> Where:
        """What a queued request must meet to be claimed: queued, and the claim's own
        conditions (``where``). Filters go here (its start deadline is the head's to
        check: the key scan stays inside the index)."""

        def conditions(t: Any) -> list[Any]:
            return [t.c.status == QUEUED, *where(t)]

        return conditions

    def _take(self, which: Any, now: Any, *, guarded: bool = True) -> Any:
        """The move of ``which`` to IN_PROGRESS. ``guarded``: only if still queued (on
        SQLite the guard is left out: the planner would scan the queued rows by status
        instead of finding the few chosen by rowid, and one writer needs no guard)."""
        return (
            requests.update()
            .where(which, *([_T.status == Status.IN_QUEUE.value] if guarded else []))
            .values(
                status=Status.IN_PROGRESS.value,
                worker_id=sa.bindparam("worker", type_=_T.worker_id.type),
                lease_expires_at=sa.bindparam("lease", type_=sa.Float()),
                attempts=_T.attempts + 1,
                started_at=sa.func.coalesce(_T.started_at, now),
                upstream_position=None,
                version=_T.version + 1,
            )
            .returning(*requests.c)
        )

    def _keys(self, where: Where) -> Any:
        """The keys with queued requests matching ``where``: a recursive skip scan, one
        index probe per key (the scan's key_id range matches no request without a key)."""
        first = requests.alias("first_key")
        anchor = sa.select(
            sa.select(first.c.key_id).where(*where(first), first.c.key_id.is_not(None)).order_by(first.c.key_id).limit(ONE).scalar_subquery().label("key_id")
        )
        keys = anchor.cte("queued_keys", recursive=True)
        after = requests.alias("next_key")
        step = sa.select(
            sa.select(after.c.key_id).where(*where(after), after.c.key_id > keys.c.key_id).order_by(after.c.key_id).limit(ONE).scalar_subquery()
        ).where(keys.c.key_id.is_not(None))
        return keys.union_all(step)

    def _saturated(self) -> Any:
        """The keys running their limit, from the running requests (as few as the
        workers' slots, found in the queue index by status): counted once per claim,
        where counting each key's as its head was found cost a claim ~16 us per waiting
        key on PostgreSQL (a deep queue of keys at their limit is all such keys)."""
        running = requests.alias("running")
        limit_of_key = self._limit_of_key()
        return (
            sa.select(running.c.key_id)
            .select_from(running.join(api_keys, api_keys.c.id == running.c.key_id))
            .where(running.c.status == RUNNING, limit_of_key.is_not(None))
            .group_by(running.c.key_id, api_keys.c.max_concurrent)
            .having(sa.func.count() >= limit_of_key)
        )

    def _limits_of(self) -> Any:
        """For a claim whose keys come from this process's queue snapshot
        (``QueueSnapshot.claim_order``, bound as ``keys``): rows (key, None, 1) of the
        keys running their limit, and (key, its limit, 0) of each of ``keys`` that is
        not; a key without a row is in neither. One round trip: the claim knows which
        keys to pass over and which it must count (``limit`` not None) without the
        candidates query's probe per waiting key."""
        saturated = self._saturated().cte("saturated")
        limit = self._limit_of_key()
        return sa.union_all(
            sa.select(saturated.c.key_id, sa.null().label("limit"), sa.literal(1, literal_execute=True).label("saturated")),
            sa.select(api_keys.c.id, limit, sa.literal(0, literal_execute=True)).where(
                api_keys.c.id.in_(sa.bindparam("keys", expanding=True)), api_keys.c.id.not_in(sa.select(saturated.c.key_id))
            ),
        )

    def _limit_of_key(self) -> Any:
        default = self.default_key_concurrency
        return api_keys.c.max_concurrent if default is None else sa.func.coalesce(api_keys.c.max_concurrent, default)

    def _heads(self, where: Where, now: Any) -> Any:
        """Each key's head among the requests matching ``where``: seq, key_id,
        priority, created_at, backend; keys running their limit are passed over before
        their head is looked for. On PostgreSQL a LATERAL
        subquery per key (a nested loop the planner cannot turn into a scan); SQLite,
        which has no LATERAL, finds each head's seq and reads its row by rowid."""
        def head(own: Callable[[Any], Any], *columns: str) -> Any:
            h = requests.alias("head")
            in_time = sa.or_(h.c.start_deadline.is_(None), h.c.start_deadline > now)
            # ordered as the index is: the planner sees it gives the order (key_id is fixed)
            return (
                sa.select(*(h.c[name] for name in columns))
                .where(*where(h), own(h), in_time)
                .order_by(h.c.key_id, h.c.priority, h.c.seq)
                .limit(ONE)
            )

        keys = self._keys(where)
        saturated = self._saturated().cte("saturated")
        keyed = sa.and_(keys.c.key_id.is_not(None), keys.c.key_id.not_in(sa.select(saturated.c.key_id)))
        if self.sqlite:
            seqs = sa.union_all(
                sa.select(head(lambda h: h.c.key_id == keys.c.key_id, "seq").scalar_subquery().label("seq")).where(keyed),
                sa.select(head(lambda h: h.c.key_id.is_(None), "seq").scalar_subquery().label("seq")),
            ).subquery("head_seqs")
            rows = sa.select(*(_T[name] for name in HEAD_COLUMNS)).select_from(seqs.join(requests, _T.seq == seqs.c.seq))
            return rows.subquery("heads")
        per_key = head(lambda h: h.c.key_id == keys.c.key_id, *HEAD_COLUMNS).lateral("key_head")
        without_key = head(lambda h: h.c.key_id.is_(None), *HEAD_COLUMNS).subquery("no_key_head")
        return sa.union_all(
            sa.select(*per_key.c).select_from(keys.join(per_key, sa.true())).where(keyed),
            sa.select(*without_key.c),
        ).subquery("heads")

    def _candidates(self, condition: Where, now: Any) -> Any:
        """The head of each key with queued requests matching ``condition`` (keys
        running their limit left out, ``_heads``), by priority, then the key that has
        waited longest for its turn, then FIFO."""
        heads = self._heads(self.claimable(condition), now)
        head = heads.c
        default = self.default_key_concurrency
        turns = queue_turns.c
        greatest = sa.func.max if self.sqlite else sa.func.greatest  # SQLite's two-argument max
        waited_since = greatest(sa.func.coalesce(turns.last_turn, 0.0), head.created_at)
        own_limit = sa.select(api_keys.c.max_concurrent).where(api_keys.c.id == head.key_id).scalar_subquery()
        key_limit = own_limit if default is None else sa.func.coalesce(own_limit, default)
        return (
            sa.select(head.seq, head.key_id, key_limit)
            .select_from(
                heads.outerjoin(queue_turns, sa.and_(turns.backend == head.backend, turns.key_id == sa.func.coalesce(head.key_id, NO_KEY)))
            )
            .order_by(head.priority, waited_since, head.seq)
            .limit(sa.bindparam("limit", type_=sa.Integer()))
        )
