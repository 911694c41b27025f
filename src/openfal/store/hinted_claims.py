"""Runner hints (fal's ``X-Fal-Runner-Hint``): best-effort routing of a request to a
worker that advertises the hint's exact string (its loaded models and LoRAs, published
in the worker registry's heartbeat).

Two statements, kept apart from the claim's own candidate query (claim_statements.py):

* ``candidates``: a worker that advertises hints first tries the oldest queued request
  (by priority, then seq) whose hint is one of its own, before its ordinary claim; the
  request is taken as any claimed one (the store's chosen-take, key limits checked).
  Hinted requests go before the fair-share order: a hint is there to reuse what a
  worker has loaded.
* ``waiting``: a worker that does not advertise a hint leaves such a request to a free
  worker that does, for ``GRACE_SECONDS`` after its submit: it asks whether the queue
  holds one that young and waits for it to be taken before claiming (worker.py). After
  the grace, or with no free advertiser, anyone claims it: best effort, as on fal.

Both read the partial index ``ix_requests_hinted`` (queued requests with a hint only)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from openfal.models import Status
from openfal.store.schema import api_keys, requests

_T = requests.c
#: how long after its submit a hinted request is left to a free advertising worker
GRACE_SECONDS = 2.0


class HintedClaims:
    def __init__(self, *, sqlite: bool, default_key_concurrency: int | None) -> None:
        now = sa.bindparam("now", type_=sa.Float())
        queued = [
            _T.status == Status.IN_QUEUE.value,
            _T.runner_hint.is_not(None),
            _T.backend.in_(sa.bindparam("backends", expanding=True)),
            sa.or_(_T.start_deadline.is_(None), _T.start_deadline > now),
        ]
        pool = _T.endpoint_id.in_(sa.bindparam("endpoints", expanding=True))
        own_limit = sa.select(api_keys.c.max_concurrent).where(api_keys.c.id == _T.key_id).scalar_subquery()
        key_limit = own_limit if default_key_concurrency is None else sa.func.coalesce(own_limit, default_key_concurrency)
        mine = _T.runner_hint.in_(sa.bindparam("hints", expanding=True))

        def candidates(*extra: Any) -> Any:
            query = sa.select(_T.seq, _T.key_id, key_limit).where(*queued, mine, *extra).order_by(_T.priority, _T.seq).limit(sa.bindparam("limit", type_=sa.Integer()))
            return query if sqlite else query.with_for_update(skip_locked=True, of=requests)

        #: (seq, key_id, key limit) of the next queued request hinted for this worker,
        #: as the store's ``_claim_next`` takes candidates
        self.candidates = candidates()
        self.candidates_of_pool = candidates(pool)

        def waiting(*extra: Any) -> Any:
            young = _T.created_at > sa.bindparam("since", type_=sa.Float())
            return sa.select(sa.func.min(_T.created_at)).where(*queued, mine, young, *extra)

        #: when the oldest queued request came that is hinted for ``hints`` (another
        #: worker's) and younger than ``since`` (None: none)
        self.waiting = waiting()
        self.waiting_of_pool = waiting(pool)
