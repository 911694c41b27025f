"""The daily and hourly rollup of charge rows (store/rollup.py) and the reports that read it with
the raw tail (store/reports.py), on a real SQLite file and the real PostgreSQL server:
counts and sums equal the raw rows' whatever part is rolled up, percentiles are within
loghist's stated relative error of percentile_cont, and no row counts twice."""

from __future__ import annotations

import asyncio
import bisect
import random

import numpy as np
import pytest
import sqlalchemy as sa

from openfal import loghist
from openfal.store import reports, rollup
from openfal.store.db import Database
from openfal.store.ledger import entry
from openfal.store.schema import charge_rollup, ledger

#: 2026-03-01T00:00:00Z: a whole hour, so the test's times are known to the second
T0 = 1772323200.0


def charge(at: float, *, key: str = "k1", endpoint: str = "fal-ai/a", code: int = 200, queued: float = 0.5, ran: float | None = 2.0) -> dict:
    row = entry(key, f"r{at}", endpoint, "charge", 0 if code >= 400 else -10_000, outcome="ok" if code < 400 else "bad_request")
    return row | {"created_at": at, "status_code": code, "unit": "request", "units": 1.0 if code < 400 else 0.0, "queue_seconds": queued, "run_seconds": ran}


async def insert(db: Database, rows: list[dict]) -> None:
    async with db.write() as conn:
        await conn.execute(ledger.insert(), rows)


def spread(n: int, seed: int = 7) -> list[dict]:
    """``n`` charges over 30 hours, two keys, two endpoints, some 4xx and 5xx."""
    rng = random.Random(seed)
    return [
        charge(
            T0 + rng.uniform(0, 30 * 3600),
            key=rng.choice(("k1", "k2")),
            endpoint=rng.choice(("fal-ai/a", "fal-ai/b")),
            code=rng.choice((200, 200, 200, 200, 422, 500)),
            queued=rng.choice((0.0, rng.expovariate(1.0))),
            ran=rng.uniform(0.5, 20.0),
        )
        for _ in range(n)
    ]


def hours(*edges_in_hours: float) -> list[float]:
    return [T0 + h * 3600 for h in edges_in_hours]


def test_histogram_percentiles_are_within_the_stated_relative_error_of_percentile_cont() -> None:
    rng = np.random.default_rng(3)
    for values in (rng.exponential(2.0, 1001), rng.uniform(1e-3, 1e4, 57), np.array([0.0, 0.0, 3.0]), np.array([7.0])):
        bins = loghist.bins_of(values)
        estimate = loghist.percentiles(bins, np.ones(len(bins), dtype=np.int64), reports.QUANTILES)
        for got, exact in zip(estimate, reports.percentiles(list(values)), strict=True):
            assert got == pytest.approx(exact, rel=loghist.RELATIVE_ERROR, abs=loghist.ZERO_BELOW)


def test_merged_histograms_equal_the_histogram_of_all_the_values() -> None:
    first, second = [0.1, 0.2, 5.0], [0.2, 9.0, 0.0]
    merged = loghist.merge(loghist.encode(loghist.bins_of(first)), loghist.encode(loghist.bins_of(second)))
    assert merged == loghist.encode(loghist.bins_of(first + second))


async def test_a_report_counts_each_row_once_whatever_part_is_rolled_up(db: Database) -> None:
    rows = spread(600)
    await insert(db, rows[:400])
    edges = hours(0, 24, 27.5, 30)  # a whole day (its day cell), hours, and a half hour raw
    filters = reports.Filters(edges[0], edges[-1])
    raw_usage, raw_stats = await reports.usage(db, filters, edges), await reports.analytics(db, filters, edges)
    assert await rollup.roll(db, batch=150, max_batches=2) == 300  # part rolled, part raw
    await insert(db, rows[400:])  # and new rows after the roll
    assert await rollup.roll(db, batch=1000) == 300
    async with db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(ledger).where(rollup.UNROLLED))).scalar() == 0
    rolled_stats = await reports.analytics(db, filters, edges)
    assert sum(s.request_count for s in rolled_stats) == 600
    # the first 400 alone, recomputed from the values
    assert sum(s.request_count for s in raw_stats) == 400
    assert sum(i.requests for i in raw_usage) == sum(1 for r in rows[:400] if r["outcome"] == "ok")
    expected = {}
    for r in rows:
        b = bisect.bisect_right(edges, r["created_at"]) - 1
        expected.setdefault((b, r["endpoint_id"]), []).append(r)
    for s in rolled_stats:
        mine = expected[(s.bucket, s.endpoint_id)]
        assert s.request_count == len(mine)
        assert (s.success_count, s.user_error_count, s.error_count) == (
            sum(r["status_code"] < 400 for r in mine), sum(400 <= r["status_code"] < 500 for r in mine), sum(r["status_code"] >= 500 for r in mine),
        )
        for got, exact in zip(s.prepare + s.duration, reports.percentiles([r["queue_seconds"] for r in mine]) + reports.percentiles([r["run_seconds"] for r in mine]), strict=True):
            assert got == pytest.approx(exact, rel=loghist.RELATIVE_ERROR, abs=loghist.ZERO_BELOW)


async def test_usage_from_the_rollup_equals_usage_from_the_raw_rows(db: Database) -> None:
    rows = spread(300, seed=11)
    await insert(db, rows)
    edges = hours(0, 24, 48)
    for key in (None, "k2"):
        filters = reports.Filters(edges[0], edges[-1], key_id=key)
        before = await reports.usage(db, filters, edges), await reports.usage(db, filters, None)
        await rollup.roll(db)
        assert (await reports.usage(db, filters, edges), await reports.usage(db, filters, None)) == before


async def test_buckets_that_do_not_start_on_an_hour_read_their_partial_hours_raw(db: Database) -> None:
    """Day buckets in a +05:30 timezone: the hour holding each half-hour edge is split
    between two buckets, so its rows are read raw, not from its cell."""
    await insert(db, [charge(T0 + 3600 * 5 + 60 * m) for m in (0, 10, 29, 31, 50)])  # 05:00-05:50 UTC
    await rollup.roll(db)
    edges = [T0 - 3600 * 18.5, T0 + 3600 * 5.5, T0 + 3600 * 29.5]
    stats = await reports.analytics(db, reports.Filters(edges[0], edges[-1]), edges)
    assert [(s.bucket, s.request_count) for s in stats] == [(0, 3), (1, 2)]
    chosen = reports.plan(edges)
    assert chosen.raw == [(edges[0], T0 - 3600 * 18), (T0 + 3600 * 5, edges[1] + 1800), (T0 + 3600 * 29, edges[2])]
    assert chosen.rolled == {rollup.HOUR: [(T0 - 3600 * 18, T0 + 3600 * 5), (T0 + 3600 * 6, T0 + 3600 * 29)]}  # no whole UTC day


def test_a_report_reads_whole_utc_days_from_day_cells_and_their_ragged_ends_from_hour_cells() -> None:
    now = T0 + 3 * rollup.DAY + 3600 * 7 + 1234.5
    chosen = reports.plan([T0 - 3600 * 2, T0 + rollup.DAY, T0 + 3 * rollup.DAY, now])
    assert chosen.rolled == {rollup.DAY: [(T0, T0 + 3 * rollup.DAY)], rollup.HOUR: [(T0 - 3600 * 2, T0), (T0 + 3 * rollup.DAY, T0 + 3 * rollup.DAY + 3600 * 7)]}
    assert chosen.raw == [(T0 + 3 * rollup.DAY + 3600 * 7, now)]


async def test_rows_settled_into_an_hour_already_rolled_grow_its_cells(db: Database) -> None:
    await insert(db, [charge(T0 + 10), charge(T0 + 20, code=500)])
    await rollup.roll(db)
    await insert(db, [charge(T0 + 30)])  # a late commit, same hour
    await rollup.roll(db)
    async with db.read() as conn:
        cells = (await conn.execute(sa.select(charge_rollup).order_by(charge_rollup.c.span))).all()
    assert [(c.span, c.start, c.request_count, c.success_count, c.error_count, c.ok_count, c.ok_cost_micros) for c in cells] == [
        (rollup.HOUR, T0, 3, 2, 1, 2, 20_000),
        (rollup.DAY, T0, 3, 2, 1, 2, 20_000),
    ]


async def test_reapers_rolling_at_once_count_every_row_once(db: Database) -> None:
    await insert(db, spread(2000, seed=5))
    rolled = await asyncio.gather(*(rollup.roll(db, batch=200) for _ in range(3)))
    rolled_more = await rollup.roll(db, batch=200)  # what a skipped turn left
    assert sum(rolled) + rolled_more == 2000
    async with db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.sum(charge_rollup.c.request_count)).where(charge_rollup.c.span == rollup.DAY))).scalar() == 2000
