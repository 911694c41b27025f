"""The SQL behind fal's Platform API reports, read from the ledger's charge rows (one
per ended request, kept after the request's own record expires): usage line items
(billing units x unit price per bucket, endpoint and key) and analytics (counts by
status class and p50/p75/p90 of queue wait and run time per bucket and endpoint).

PostgreSQL aggregates in SQL: ``width_bucket`` against the bucket edges (a binary
search per row) and ``percentile_cont`` for the percentiles. SQLite has neither, so
there the filtered rows are read and folded here with the same definitions (linear
interpolation between closest ranks, as ``percentile_cont``); a SQLite deployment is
one machine's traffic. Both are tested to give the same answers."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from openfal.store.db import Database
from openfal.store.schema import ledger, requests

_L = ledger.c
#: charge rows, spelled as the partial indexes' predicate: a bound value would not
#: match it in a generic plan (asyncpg's prepared statements switch to one after five
#: runs), and every report would read the whole ledger
CHARGES = sa.text("ledger.kind = 'charge'")
#: the percentiles fal's analytics report
QUANTILES = (0.5, 0.75, 0.9)


@dataclass(frozen=True, slots=True)
class Filters:
    """Which charge rows a report reads: ``[start, end)``, one key (None: all) and some
    endpoints (None: all)."""

    start: float
    end: float
    key_id: str | None = None
    endpoint_ids: tuple[str, ...] | None = None

    def where(self) -> list[Any]:
        clauses = [CHARGES, _L.created_at >= self.start, _L.created_at < self.end]
        if self.key_id is not None:
            clauses.append(_L.key_id == self.key_id)
        if self.endpoint_ids is not None:
            clauses.append(_L.endpoint_id.in_(self.endpoint_ids))
        return clauses


@dataclass(frozen=True, slots=True)
class LineItem:
    """Billing units of one unit, for one endpoint and key, in one bucket (or the whole
    range: bucket None)."""

    bucket: int | None
    endpoint_id: str
    key_id: str | None
    unit: str
    quantity: float
    cost_micros: int
    requests: int


@dataclass(slots=True)
class Stats:
    """One bucket's (or the whole range's: bucket None) analytics of one endpoint."""

    bucket: int | None
    endpoint_id: str
    request_count: int = 0
    success_count: int = 0
    user_error_count: int = 0
    error_count: int = 0
    #: p50, p75, p90 of seconds queued before a worker started the request
    prepare: tuple[float | None, ...] = (None, None, None)
    #: p50, p75, p90 of seconds the request ran
    duration: tuple[float | None, ...] = (None, None, None)


def percentiles(values: Sequence[float], quantiles: Iterable[float] = QUANTILES) -> tuple[float | None, ...]:
    """PostgreSQL's ``percentile_cont``: linear interpolation between the closest ranks
    of the sorted values; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return tuple(None for _ in quantiles)
    out = []
    for q in quantiles:
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        out.append(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
    return tuple(out)


def _bucket(edges: Sequence[float]) -> Any:
    """PostgreSQL: the 0-based bucket of a row's time (edges[0] <= t < edges[-1]).
    Evenly spaced edges (minutes, hours; days and weeks without a DST change) are one
    division; others (months, a DST day) a binary search with ``width_bucket``, which
    costs about 1 us a row more."""
    steps = {round(b - a, 6) for a, b in zip(edges[:-2], edges[1:-1], strict=True)}
    if len(steps) <= 1 and len(edges) > 1:
        step = steps.pop() if steps else edges[-1] - edges[0]
        if edges[-1] - edges[-2] <= step:
            origin = sa.bindparam("origin", edges[0], type_=sa.Float())
            return sa.cast(sa.func.floor((_L.created_at - origin) / sa.bindparam("step", step, type_=sa.Float())), sa.Integer)
    return sa.func.width_bucket(_L.created_at, sa.bindparam("edges", list(edges), type_=postgresql.ARRAY(sa.Float()))) - 1


async def usage(db: Database, filters: Filters, edges: Sequence[float] | None) -> list[LineItem]:
    """Line items of the requests that delivered something, per bucket (``edges``; None:
    one item per endpoint, key and unit over the whole range)."""
    unit = sa.func.coalesce(_L.unit, "request")
    where = [*filters.where(), _L.outcome == "ok"]
    if not db.is_sqlite:
        bucket = _bucket(edges).label("bucket") if edges is not None else sa.literal(None).label("bucket")
        query = (
            sa.select(bucket, _L.endpoint_id, _L.key_id, unit, sa.func.sum(sa.func.coalesce(_L.units, 0.0)), -sa.func.sum(_L.amount_micros), sa.func.count())
            .where(*where)
            .group_by(bucket, _L.endpoint_id, _L.key_id, unit)
        )
        rows = await _aggregate(db, query)
        items = [LineItem(None if r[0] is None else int(r[0]), r[1], r[2], r[3], float(r[4] or 0), int(r[5] or 0), int(r[6])) for r in rows]
    else:
        query = sa.select(_L.created_at, _L.endpoint_id, _L.key_id, unit, sa.func.coalesce(_L.units, 0.0), _L.amount_micros).where(*where)
        sums: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0.0, 0, 0])
        async with db.read() as conn:
            for at, endpoint_id, key_id, name, units, amount in (await conn.execute(query)).all():
                index = bisect.bisect_right(edges, at) - 1 if edges is not None else None
                entry = sums[(index, endpoint_id, key_id, name)]
                entry[0] += float(units or 0)
                entry[1] -= int(amount)
                entry[2] += 1
        items = [LineItem(k[0], k[1], k[2], k[3], v[0], int(v[1]), int(v[2])) for k, v in sums.items()]
    return sorted(items, key=lambda i: (i.bucket or 0, i.endpoint_id or "", i.key_id or "", i.unit))


async def analytics(db: Database, filters: Filters, edges: Sequence[float] | None) -> list[Stats]:
    """Per bucket (``edges``; None: the whole range) and endpoint: requests by status
    class (2xx/3xx success, 4xx user error, 5xx error) and percentiles of queue wait
    and run time."""
    if db.is_sqlite:
        return await _analytics_folded(db, filters, edges)
    bucket = _bucket(edges).label("bucket") if edges is not None else sa.literal(None).label("bucket")
    qs = sa.literal(list(QUANTILES), type_=postgresql.ARRAY(sa.Float()))
    status = sa.func.coalesce(_L.status_code, 200)
    query = (
        sa.select(
            bucket,
            _L.endpoint_id,
            sa.func.count(),
            sa.func.count().filter(status < 400),
            sa.func.count().filter(sa.and_(status >= 400, status < 500)),
            sa.func.count().filter(status >= 500),
            sa.func.percentile_cont(qs).within_group(_L.queue_seconds),
            sa.func.percentile_cont(qs).within_group(_L.run_seconds),
        )
        .where(*filters.where())
        .group_by(bucket, _L.endpoint_id)
    )
    rows = await _aggregate(db, query)
    stats = [
        Stats(None if r[0] is None else int(r[0]), r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5]), _three(r[6]), _three(r[7]))
        for r in rows
    ]
    return sorted(stats, key=lambda s: (s.bucket or 0, s.endpoint_id or ""))


#: room for a report's grouping and percentile sorts (PostgreSQL's default 4 MB spills
#: a month of charge rows to disk), for the report's transaction only
_WORK_MEM = sa.text("SET LOCAL work_mem = '16MB'")


async def _aggregate(db: Database, query: Any) -> list[sa.Row[Any]]:
    async with db.read() as conn:
        await conn.execute(_WORK_MEM)
        return list((await conn.execute(query)).all())


def _three(values: Sequence[float | None] | None) -> tuple[float | None, ...]:
    return tuple(values) if values is not None else (None, None, None)


@dataclass(slots=True)
class _Fold:
    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    queued: list[float] = field(default_factory=list)
    ran: list[float] = field(default_factory=list)


async def _analytics_folded(db: Database, filters: Filters, edges: Sequence[float] | None) -> list[Stats]:
    query = sa.select(_L.created_at, _L.endpoint_id, _L.status_code, _L.queue_seconds, _L.run_seconds).where(*filters.where())
    folds: dict[tuple[int | None, str], _Fold] = defaultdict(_Fold)
    async with db.read() as conn:
        for at, endpoint_id, status_code, queued, ran in (await conn.execute(query)).all():
            index = bisect.bisect_right(edges, at) - 1 if edges is not None else None
            fold = folds[(index, endpoint_id)]
            code = status_code or 200
            fold.counts[0] += 1
            fold.counts[1 if code < 400 else 2 if code < 500 else 3] += 1
            if queued is not None:
                fold.queued.append(queued)
            if ran is not None:
                fold.ran.append(ran)
    stats = [Stats(k[0], k[1], *f.counts, percentiles(f.queued), percentiles(f.ran)) for k, f in folds.items()]
    return sorted(stats, key=lambda s: (s.bucket or 0, s.endpoint_id or ""))


@dataclass(frozen=True, slots=True)
class RequestFilters:
    """Which requests a listing shows (``GET /v1/models/requests/by-endpoint``)."""

    start: float | None = None
    end: float | None = None
    key_id: str | None = None
    endpoint_ids: tuple[str, ...] | None = None
    #: success (2xx/3xx), user_error (4xx), error (5xx); None: any, ended or not
    status: str | None = None
    request_ids: tuple[str, ...] | None = None


#: what a listing may be sorted by, newest or longest first
SORTS = {"ended_at": requests.c.completed_at, "duration": requests.c.completed_at - requests.c.started_at}


async def request_page(db: Database, filters: RequestFilters, *, sort_by: str, offset: int, limit: int) -> list[sa.Row[Any]]:
    """One page of requests (``limit`` + 1 rows are read, so the caller knows whether
    there are more), newest end or longest run first, ties by newest submit."""
    t = requests.c
    query = sa.select(requests)
    if filters.start is not None:
        query = query.where(t.created_at >= filters.start)
    if filters.end is not None:
        query = query.where(t.created_at < filters.end)
    if filters.key_id is not None:
        query = query.where(t.key_id == filters.key_id)
    if filters.endpoint_ids is not None:
        query = query.where(t.endpoint_id.in_(filters.endpoint_ids))
    if filters.request_ids is not None:
        query = query.where(t.id.in_(filters.request_ids))
    code = sa.func.coalesce(t.result_status, 200)
    if filters.status == "success":
        query = query.where(t.status == "COMPLETED", code < 400)
    elif filters.status == "user_error":
        query = query.where(t.status == "COMPLETED", code >= 400, code < 500)
    elif filters.status == "error":
        query = query.where(t.status == "COMPLETED", code >= 500)
    order = SORTS[sort_by]
    query = query.order_by(order.desc().nulls_last(), t.seq.desc()).offset(offset).limit(limit + 1)
    async with db.read() as conn:
        return list((await conn.execute(query)).all())


async def mean_call_cost(db: Database, endpoint_ids: Sequence[str], since: float) -> dict[str, float]:
    """Dollars a successful call to each endpoint cost on average since ``since`` (what
    fal's ``historical_api_price`` estimate multiplies); endpoints never called are absent."""
    query = (
        sa.select(_L.endpoint_id, sa.func.avg(-_L.amount_micros))
        .where(CHARGES, _L.outcome == "ok", _L.created_at >= since, _L.endpoint_id.in_(list(endpoint_ids)))
        .group_by(_L.endpoint_id)
    )
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return {endpoint_id: float(mean) / 1_000_000 for endpoint_id, mean in rows if mean is not None}
