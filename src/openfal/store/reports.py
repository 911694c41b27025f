"""The SQL behind fal's Platform API reports, read from the ledger's charge rows (one
per ended request, kept after the request's own record expires): usage line items
(billing units x unit price per bucket, endpoint and key) and analytics (counts by
status class and p50/p75/p90 of queue wait and run time per bucket and endpoint).

A report reads the rollup (``charge_rollup``, see rollup.py) for every whole UTC day
and then every whole hour inside one of its buckets, and raw charge rows for the rest:
the parts of buckets that do not start or end on an hour (a minute bucket, a day in a
half-hour timezone) and the rows the reaper has not rolled up yet, so it is always
current. Both come from
one statement (one snapshot: a roll committing meanwhile cannot count a row twice) and
are folded the same way (rollup.Cell). Counts and sums are exact; percentiles come
from log-histograms, within ``loghist.RELATIVE_ERROR`` (1%) of ``percentile_cont``."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from openfal import loghist
from openfal.store.db import Database
from openfal.store.rollup import SPANS, UNROLLED, Cell
from openfal.store.schema import charge_rollup, ledger, requests

_L = ledger.c
_H = charge_rollup.c
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


@dataclass(frozen=True, slots=True)
class LineItem:
    """Billing units of one unit, for one endpoint and key, in one bucket (or the whole
    range: bucket None)."""

    bucket: int | None
    endpoint_id: str | None
    key_id: str | None
    unit: str
    quantity: float
    cost_micros: int
    requests: int


@dataclass(slots=True)
class Stats:
    """One bucket's (or the whole range's: bucket None) analytics of one endpoint."""

    bucket: int | None
    endpoint_id: str | None
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
    of the sorted values; None for no values. (The reports' histograms are within
    ``loghist.RELATIVE_ERROR`` of it.)"""
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


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a report's rows come from: per span, the whole cells inside one bucket from
    the rollup (``rolled``), the rest of the range from raw rows (``raw``); merged
    ranges in time order."""

    rolled: dict[float, list[tuple[float, float]]] = field(default_factory=dict)
    raw: list[tuple[float, float]] = field(default_factory=list)

    def everything_rolled(self) -> list[tuple[float, float]]:
        merged: list[tuple[float, float]] = []
        for low, high in sorted(r for ranges in self.rolled.values() for r in ranges):
            _extend(merged, low, high)
        return merged


def plan(edges: Sequence[float]) -> Plan:
    """The rolled and raw ranges of buckets ``edges[i] <= t < edges[i + 1]``: the
    longest cells that fit, then shorter ones at the ends, raw rows for what is left."""
    chosen = Plan()
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        _split(chosen, low, high, SPANS)
    return chosen


def _split(chosen: Plan, low: float, high: float, spans: Sequence[float]) -> None:
    if not spans:
        _extend(chosen.raw, low, high)
        return
    span = spans[0]
    first, last = math.ceil(low / span) * span, math.floor(high / span) * span
    if last <= first:
        _split(chosen, low, high, spans[1:])
        return
    _split(chosen, low, first, spans[1:])
    _extend(chosen.rolled.setdefault(span, []), first, last)
    _split(chosen, last, high, spans[1:])


def _extend(ranges: list[tuple[float, float]], low: float, high: float) -> None:
    if high <= low:
        return
    if ranges and ranges[-1][1] >= low:
        ranges[-1] = (ranges[-1][0], max(ranges[-1][1], high))
    else:
        ranges.append((low, high))


def _within(column: Any, ranges: Sequence[tuple[float, float]]) -> Any:
    return sa.or_(*(sa.and_(column >= low, column < high) for low, high in ranges))


_OK = _L.outcome == "ok"
_CODE = sa.func.coalesce(_L.status_code, 200)


def _statement(filters: Filters, edges: Sequence[float], *, ok_only: bool, durations: bool) -> Any:
    """One statement: the rollup's cells for the whole days and hours, raw charge rows
    for the rest and for the rows not rolled up, in the cells' columns (a raw row is a
    cell of one request with its values instead of histograms)."""
    chosen = plan(edges)
    nothing = sa.null()
    arms = []
    if chosen.rolled:
        cells = sa.select(
            _H.start.label("at"), _H.endpoint_id, _H.key_id, _H.unit,
            _H.request_count, _H.success_count, _H.user_error_count, _H.error_count, _H.ok_count, _H.ok_units, _H.ok_cost_micros,
            *((_H.queue_hist, _H.run_hist, sa.cast(nothing, sa.Float).label("queue_seconds"), sa.cast(nothing, sa.Float).label("run_seconds")) if durations else ()),
        ).where(sa.or_(*(sa.and_(_H.span == span, _within(_H.start, ranges)) for span, ranges in chosen.rolled.items())))
        if filters.key_id is not None:
            cells = cells.where(_H.key_id == filters.key_id)
        if filters.endpoint_ids is not None:
            cells = cells.where(_H.endpoint_id.in_(filters.endpoint_ids))
        if ok_only:
            cells = cells.where(_H.ok_count > 0)
        arms.append(cells)
    raw_columns = (
        _L.created_at, sa.func.coalesce(_L.endpoint_id, ""), sa.func.coalesce(_L.key_id, ""), sa.func.coalesce(_L.unit, "request"),
        sa.literal(1), sa.case((_CODE < 400, 1), else_=0), sa.case((sa.and_(_CODE >= 400, _CODE < 500), 1), else_=0), sa.case((_CODE >= 500, 1), else_=0),
        sa.case((_OK, 1), else_=0), sa.case((_OK, sa.func.coalesce(_L.units, 0.0)), else_=0.0), sa.case((_OK, -_L.amount_micros), else_=0),
        *((sa.cast(nothing, sa.LargeBinary), sa.cast(nothing, sa.LargeBinary), _L.queue_seconds, _L.run_seconds) if durations else ()),
    )
    for predicate, ranges in ((CHARGES, chosen.raw), (UNROLLED, chosen.everything_rolled())):
        if not ranges:
            continue
        rows = sa.select(*raw_columns).where(predicate, _within(_L.created_at, ranges))
        if filters.key_id is not None:
            rows = rows.where(_L.key_id == filters.key_id)
        if filters.endpoint_ids is not None:
            rows = rows.where(_L.endpoint_id.in_(filters.endpoint_ids))
        if ok_only:
            rows = rows.where(_OK)
        arms.append(rows)
    return sa.union_all(*arms) if len(arms) > 1 else arms[0]


#: for the report's transaction only: no parallel workers (a report reads a few thousand
#: rows; starting workers, which the planner does when it overestimates the unrolled
#: tail, cost more than the read: 53 ms -> 8 ms) and a plan made for the values bound
#: (asyncpg's prepared statements switch to a generic plan after five runs, which read a
#: month's analytics in 130 ms instead of 26)
_REPORT_SETTINGS = sa.text(
    "SELECT set_config('max_parallel_workers_per_gather', '0', true), set_config('plan_cache_mode', 'force_custom_plan', true)"
)
_SUMS = ("request_count", "success_count", "user_error_count", "error_count", "ok_count", "ok_units", "ok_cost_micros")


async def _folded(db: Database, filters: Filters, edges: Sequence[float] | None, *, per_key: bool, ok_only: bool, durations: bool) -> dict[tuple[Any, ...], Cell]:
    """The report's rows folded per (bucket, endpoint[, key, unit]); bucket None when
    ``edges`` is None (the whole range). PostgreSQL groups them (sums, histograms'
    bytes concatenated, raw values in arrays: a month of cells comes back as one row
    per bucket and endpoint); SQLite, without ``width_bucket`` or byte aggregates,
    returns them one by one to be grouped here."""
    bounds = list(edges) if edges is not None else [filters.start, filters.end]
    bounds = [max(filters.start, bounds[0]), *bounds[1:-1], min(filters.end, bounds[-1])]
    folds: dict[tuple[Any, ...], Cell] = {}
    if bounds[-1] <= bounds[0]:
        return folds
    flat = _statement(filters, bounds, ok_only=ok_only, durations=durations)
    statement = flat if db.is_sqlite else _grouped(flat, bounds if edges is not None else None, per_key=per_key, durations=durations)
    async with db.read() as conn:
        if not db.is_sqlite:
            await conn.execute(_REPORT_SETTINGS)
        for row in await conn.execute(statement):
            if db.is_sqlite:
                bucket = bisect.bisect_right(bounds, row.at) - 1 if edges is not None else None
            else:
                bucket = None if row.bucket is None else int(row.bucket)
            group = (bucket, row.endpoint_id, row.key_id, row.unit) if per_key else (bucket, row.endpoint_id)
            cell = folds.get(group)
            if cell is None:
                cell = folds[group] = Cell()
            for name in _SUMS:  # PostgreSQL's sum of a bigint is a numeric (Decimal)
                kind = float if name == "ok_units" else int
                setattr(cell, name, getattr(cell, name) + kind(getattr(row, name) or 0))
            if durations:
                if row.queue_hist:
                    cell.queue_hists.append(row.queue_hist)
                if row.run_hist:
                    cell.run_hists.append(row.run_hist)
                cell.queue_values.extend(_values(row.queue_seconds))
                cell.run_values.extend(_values(row.run_seconds))
    return folds


def _values(value: float | list[float] | None) -> list[float]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _grouped(flat: Any, edges: Sequence[float] | None, *, per_key: bool, durations: bool) -> Any:
    """PostgreSQL: ``flat`` grouped per bucket, endpoint (and key and unit)."""
    rows = flat.subquery()
    bucket = (_bucket(rows.c.at, edges) if edges is not None else sa.null()).label("bucket")
    keys = [rows.c.endpoint_id, *((rows.c.key_id, rows.c.unit) if per_key else ())]
    sums = [sa.func.sum(rows.c[name]).label(name) for name in _SUMS]
    hists = []
    if durations:
        nothing: Any = sa.literal_column("''::bytea")
        hists = [
            sa.func.string_agg(rows.c.queue_hist, nothing).label("queue_hist"),
            sa.func.string_agg(rows.c.run_hist, nothing).label("run_hist"),
            sa.func.array_agg(rows.c.queue_seconds).filter(rows.c.queue_seconds.is_not(None)).label("queue_seconds"),
            sa.func.array_agg(rows.c.run_seconds).filter(rows.c.run_seconds.is_not(None)).label("run_seconds"),
        ]
    return sa.select(bucket, *keys, *sums, *hists).group_by(*keys, *((bucket,) if edges is not None else ()))


def _bucket(at: Any, edges: Sequence[float]) -> Any:
    """PostgreSQL: the 0-based bucket of a time (edges[0] <= t < edges[-1]). Evenly
    spaced edges (minutes, hours; days and weeks without a DST change) are one
    division; others (months, a DST day) a binary search with ``width_bucket``."""
    steps = {round(b - a, 6) for a, b in zip(edges[:-2], edges[1:-1], strict=True)}
    if len(steps) <= 1 and len(edges) > 1:
        step = steps.pop() if steps else edges[-1] - edges[0]
        if edges[-1] - edges[-2] <= step:
            origin = sa.bindparam("origin", edges[0], type_=sa.Float())
            return sa.cast(sa.func.floor((at - origin) / sa.bindparam("step", step, type_=sa.Float())), sa.Integer)
    return sa.func.width_bucket(at, sa.bindparam("edges", list(edges), type_=postgresql.ARRAY(sa.Float()))) - 1


async def usage(db: Database, filters: Filters, edges: Sequence[float] | None) -> list[LineItem]:
    """Line items of the requests that delivered something, per bucket (``edges``; None:
    one item per endpoint, key and unit over the whole range)."""
    folds = await _folded(db, filters, edges, per_key=True, ok_only=True, durations=False)
    items = [
        LineItem(bucket, endpoint_id or None, key_id or None, unit, cell.ok_units, cell.ok_cost_micros, cell.ok_count)
        for (bucket, endpoint_id, key_id, unit), cell in folds.items()
        if cell.ok_count
    ]
    return sorted(items, key=lambda i: (i.bucket or 0, i.endpoint_id or "", i.key_id or "", i.unit))


async def analytics(db: Database, filters: Filters, edges: Sequence[float] | None) -> list[Stats]:
    """Per bucket (``edges``; None: the whole range) and endpoint: requests by status
    class (2xx/3xx success, 4xx user error, 5xx error) and percentiles of queue wait
    and run time."""
    folds = await _folded(db, filters, edges, per_key=False, ok_only=False, durations=True)
    histograms = [cell.histograms() for cell in folds.values()]
    queued = loghist.percentiles_of_many([h[0] for h in histograms], QUANTILES)
    ran = loghist.percentiles_of_many([h[1] for h in histograms], QUANTILES)
    stats = [
        Stats(bucket, endpoint_id or None, cell.request_count, cell.success_count, cell.user_error_count, cell.error_count, waits, runs)
        for ((bucket, endpoint_id), cell), waits, runs in zip(folds.items(), queued, ran, strict=True)
    ]
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


async def mean_call_cost(db: Database, endpoint_ids: Sequence[str], since: float, until: float) -> dict[str, float]:
    """Dollars a successful call to each endpoint cost on average in ``[since, until)``
    (what fal's ``historical_api_price`` estimate multiplies), from the same line items
    as usage; endpoints never called are absent."""
    totals: dict[str, list[int]] = {}
    for item in await usage(db, Filters(since, until, None, tuple(endpoint_ids)), None):
        if item.endpoint_id is None:
            continue
        entry = totals.setdefault(item.endpoint_id, [0, 0])
        entry[0] += item.cost_micros
        entry[1] += item.requests
    return {endpoint_id: cost / count / 1_000_000 for endpoint_id, (cost, count) in totals.items() if count}
