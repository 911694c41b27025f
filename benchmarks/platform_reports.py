"""The Platform API's usage and analytics reports over 1,000,000 ledger rows on
PostgreSQL (issue 26: each must answer in 200 ms or less). The ledger holds what a real
one does: a reserve, a release and a charge row per request (333,334 requests over 30
days, 20 keys, 10 endpoints, 6% user errors, 2% server errors). The reaper's
rollup (``openfal.store.rollup``) is built as the reaper builds it, batch by batch
(timed), except for the last ``--tail-seconds`` of requests, which the reports read
raw as they read what settled since the reaper's last sweep. Each report is timed
through ``openfal.store.reports`` (what the routes run) as the median of ``--repeats``
runs; the baseline, in the same run on the same database, is counting the charge rows
of the same range (an index-only scan with no grouping or sorting).

    .venv/bin/python benchmarks/platform_reports.py [--rows 1000000] [--repeats 7] [--tail-seconds 600]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from openfal.platform_api.timeframes import buckets  # noqa: E402
from openfal.store import reports, rollup  # noqa: E402
from openfal.store.db import Database  # noqa: E402
from openfal.store.schema import charge_rollup, ledger  # noqa: E402
from tests.support import create_pg_database, drop_pg_database, pg_database_url  # noqa: E402

DAYS = 30
#: one request's three rows; the charge row carries what the reports read
FILL = """
INSERT INTO ledger (key_id, request_id, endpoint_id, kind, amount_micros, images, megapixels, video_seconds,
                    outcome, created_at, status_code, unit, units, queue_seconds, run_seconds)
SELECT 'key' || (r % 20), md5(r::text), 'fal-ai/model-' || (r % 10), k.kind,
       CASE k.kind WHEN 'reserve' THEN -25000 WHEN 'release' THEN 25000 ELSE CASE WHEN r % 50 IN (0, 1, 2, 3) THEN 0 ELSE -25000 END END,
       1, 1.0, 0.0,
       CASE WHEN k.kind <> 'charge' THEN NULL WHEN r % 50 IN (0, 1, 2) THEN 'bad_request' WHEN r % 50 = 3 THEN 'runner_server_error' ELSE 'ok' END,
       CAST(:start AS float8) + r * (CAST(:span AS float8) / :requests),
       CASE WHEN k.kind <> 'charge' THEN NULL WHEN r % 50 IN (0, 1, 2) THEN 422 WHEN r % 50 = 3 THEN 500 ELSE 200 END,
       CASE WHEN k.kind = 'charge' THEN 'megapixels' END,
       CASE WHEN k.kind = 'charge' THEN CASE WHEN r % 50 IN (0, 1, 2, 3) THEN 0.0 ELSE 1.0 END END,
       CASE WHEN k.kind = 'charge' THEN random() * 3 END,
       CASE WHEN k.kind = 'charge' THEN 1 + random() * 9 END
FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS r
CROSS JOIN (VALUES ('reserve'), ('release'), ('charge')) AS k(kind)
"""


async def timed(call: Callable[[], Awaitable[Any]], repeats: int) -> float:
    await call()  # warm: plans and pages cached, as on a live server
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


async def main(rows: int, repeats: int, tail_seconds: float, keep: bool = False) -> None:
    name = await create_pg_database()
    db = Database(pg_database_url(name))
    try:
        await db.migrate()
        now = time.time()
        requests = rows // 3 + (1 if rows % 3 else 0)
        span = DAYS * 86400.0
        rolled = requests - int(requests * tail_seconds / span)
        fill = {"start": now - span, "span": span, "requests": requests}
        async with db.write() as conn:
            await conn.execute(sa.text(FILL), fill | {"first": 1, "last": rolled})
        t = time.perf_counter()
        while await rollup.roll(db):
            pass
        took = time.perf_counter() - t
        async with db.write() as conn:
            await conn.execute(sa.text(FILL), fill | {"first": rolled + 1, "last": requests})
        async with db.engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in ("ledger", "charge_rollup"):  # as autovacuum would have by now
                await autocommit.execute(sa.text(f"VACUUM ANALYZE {table}"))
        async with db.read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(ledger))).scalar()
        async with db.read() as conn:
            cells = (await conn.execute(sa.select(sa.func.count()).select_from(charge_rollup))).scalar()
            tail = (await conn.execute(sa.select(sa.func.count()).select_from(ledger).where(rollup.UNROLLED))).scalar()
        print(f"ledger rows: {total:,} ({requests:,} requests over {DAYS} days)")
        print(f"rollup: {rolled:,} charge rows into {cells:,} day and hour cells in {took:.1f} s ({rolled / took:,.0f} rows/s); {tail:,} rows not rolled up (the last {tail_seconds:.0f} s)")
        month = buckets(time_iso(now - DAYS * 86400 - 1), time_iso(now + 1), timeframe="day")
        week = buckets(time_iso(now - 7 * 86400), time_iso(now + 1), timeframe="day")
        day = buckets(None, None, timeframe="hour", now=now + 1)
        cases: list[tuple[str, Any, Any]] = [
            ("30 days by day, all keys", month, reports.Filters(month.start, month.end)),
            ("30 days by day, one key", month, reports.Filters(month.start, month.end, key_id="key3")),
            ("7 days by day, all keys", week, reports.Filters(week.start, week.end)),
            ("last 24 h by hour, all keys", day, reports.Filters(day.start, day.end)),
        ]
        print(f"month buckets: {len(month.edges) - 1} from {time_iso(month.edges[0])}")
        print(f"{'report':<44}{'median ms':>10}{'baseline ms':>13}{'ratio':>8}")
        for label, span, filters in cases:
            baseline = await timed(lambda f=filters: _count(db, f), repeats)
            for report, call in (
                ("analytics", lambda f=filters, s=span: reports.analytics(db, f, s.edges)),
                ("usage", lambda f=filters, s=span: reports.usage(db, f, s.edges)),
                ("usage summary", lambda f=filters: reports.usage(db, f, None)),
            ):
                took = await timed(call, repeats)
                print(f"{report + ': ' + label:<44}{took * 1000:>10.1f}{baseline * 1000:>13.1f}{took / baseline:>8.2f}")
    finally:
        await db.close()
        if keep:
            print(f"kept database {name}")
        else:
            await drop_pg_database(name)


def time_iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


async def _count(db: Database, filters: reports.Filters) -> int:
    where = [reports.CHARGES, ledger.c.created_at >= filters.start, ledger.c.created_at < filters.end]
    if filters.key_id is not None:
        where.append(ledger.c.key_id == filters.key_id)
    async with db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(ledger).where(*where))).scalar() or 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tail-seconds", type=float, default=600.0, help="the newest requests' span left for the reports to read raw")
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed) to explain queries")
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.repeats, args.tail_seconds, args.keep))
