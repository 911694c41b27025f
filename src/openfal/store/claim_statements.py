"""The statements of a queue claim, built once per store with every value a bound
parameter.

A claim's candidate query is subqueries, an alias and an outer join: building that
expression (and its cache key) anew at every claim cost SQLAlchemy more CPU than
SQLite took to run it, a third of an API process's time under sequential submits. Built
once, SQLAlchemy finds the compiled form in its cache and only binds the values:

``backends`` (a list), ``backend`` and ``batch_key`` (a batch's followers), ``now``,
``limit``, ``worker``, ``lease``, ``chosen`` (a list of seqs), ``key_id``, and
``endpoints`` (a list: a worker pool's endpoints, see ``ClaimStatements.of_pool``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from openfal.models import Status
from openfal.store.schema import api_keys, queue_turns, requests

_T = requests.c
#: a queue turn's key for requests without an API key
NO_KEY = ""


class ClaimStatements:
    def __init__(self, *, sqlite: bool, default_key_concurrency: int | None) -> None:
        self.sqlite = sqlite
        self.default_key_concurrency = default_key_concurrency
        now = sa.bindparam("now", type_=sa.Float())
        #: the next queued requests of some backends, in claim order, with their key's limit
        self.next_of_backends = self._candidates(_T.backend.in_(sa.bindparam("backends", expanding=True)), now)
        #: the next queued requests that share a batch key with the one just claimed
        self.next_of_batch = self._candidates(
            sa.and_(_T.backend == sa.bindparam("backend"), _T.batch_key == sa.bindparam("batch_key")), now
        )
        #: SQLite, one request: the choice and the claim in one statement (one writer at a
        #: time, so the candidate query's own test of each key's running count is exact)
        self.take_next = self._take(_T.seq == self.next_of_backends.with_only_columns(_T.seq).scalar_subquery(), now)
        #: the same two for a worker pool (``openfal worker --models``): only its endpoints
        self.next_of_pool = self._candidates(sa.and_(_T.backend.in_(sa.bindparam("backends", expanding=True)), self.of_pool()), now)
        self.take_next_of_pool = self._take(_T.seq == self.next_of_pool.with_only_columns(_T.seq).scalar_subquery(), now)
        self.take_chosen = self._take(_T.seq.in_(sa.bindparam("chosen", expanding=True)), now)
        own_limit = sa.select(api_keys.c.max_concurrent).where(api_keys.c.id == sa.bindparam("key_id"))
        #: a key's own limit (its row locked on PostgreSQL: claimers of one key take turns)
        self.key_limit = own_limit if sqlite else own_limit.with_for_update()
        self.key_running = sa.select(sa.func.count()).where(
            _T.key_id == sa.bindparam("key_id"), _T.status == Status.IN_PROGRESS.value
        )

    @staticmethod
    def of_pool() -> Any:
        """A worker pool's restriction, added to a candidate query's condition: only the
        endpoints the worker serves (bound as ``endpoints``)."""
        return _T.endpoint_id.in_(sa.bindparam("endpoints", expanding=True))

    def _take(self, which: Any, now: Any) -> Any:
        return (
            requests.update()
            .where(which, _T.status == Status.IN_QUEUE.value)
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

    def _candidates(self, condition: Any, now: Any) -> Any:
        """Queued requests matching ``condition`` by priority, then the key that has
        waited longest for its turn, then FIFO; keys already running their limit are
        left out (rows locked and skipped by concurrent claimers on PostgreSQL)."""
        others = requests.alias("running")
        running = (
            sa.select(sa.func.count())
            .where(others.c.key_id == api_keys.c.id, others.c.status == Status.IN_PROGRESS.value)
            .scalar_subquery()
        )
        default = self.default_key_concurrency
        limit_of_key = api_keys.c.max_concurrent if default is None else sa.func.coalesce(api_keys.c.max_concurrent, default)
        saturated = sa.exists().where(api_keys.c.id == _T.key_id, limit_of_key.is_not(None), limit_of_key <= running)
        turns = queue_turns.c
        greatest = sa.func.max if self.sqlite else sa.func.greatest  # SQLite's two-argument max
        waited_since = greatest(sa.func.coalesce(turns.last_turn, 0.0), _T.created_at)
        own_limit = sa.select(api_keys.c.max_concurrent).where(api_keys.c.id == _T.key_id).scalar_subquery()
        key_limit = own_limit if default is None else sa.func.coalesce(own_limit, default)
        candidates = (
            sa.select(_T.seq, _T.key_id, key_limit)
            .select_from(
                requests.outerjoin(queue_turns, sa.and_(turns.backend == _T.backend, turns.key_id == sa.func.coalesce(_T.key_id, NO_KEY)))
            )
            .where(
                _T.status == Status.IN_QUEUE.value,
                condition,
                sa.or_(_T.start_deadline.is_(None), _T.start_deadline > now),
                ~saturated,
            )
            .order_by(_T.priority, waited_since, _T.seq)
            .limit(sa.bindparam("limit", type_=sa.Integer()))
        )
        if not self.sqlite:
            candidates = candidates.with_for_update(skip_locked=True, of=requests)
        return candidates
