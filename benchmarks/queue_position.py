"""The cost of ``queue_position`` (every IN_QUEUE status answer computes it) for the
last of 1,000 and of 100,000 queued requests, on SQLite and PostgreSQL. The baseline
is reading the request itself (``get``), measured in the same run on the same database.

    .venv/bin/python benchmarks/queue_position.py [--queued 1000,100000] [--repeats 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from openfal.models import RequestRecord  # noqa: E402
from openfal.store.db import Database  # noqa: E402
from openfal.store.requests import RequestStore  # noqa: E402
from openfal.store.schema import requests  # noqa: E402
from tests.support import create_pg_database, drop_pg_database, pg_database_url  # noqa: E402


async def fill(db: Database, count: int) -> str:
    now = time.time()
    rows = [
        {"id": str(uuid.uuid4()), "app": "a/b", "endpoint_id": "a/b", "backend": "local", "key_id": None, "status": "IN_QUEUE",
         "priority": 0, "input": {}, "base_url": "http://x", "store_io": True, "created_at": now, "attempts": 0,
         "cancel_requested": False, "backend_state": {}, "version": 0}
        for _ in range(count)
    ]
    async with db.write() as conn:
        for start in range(0, count, 10_000):
            await conn.execute(requests.insert(), rows[start : start + 10_000])
    return rows[-1]["id"]


async def timed(call, repeats: int) -> float:  # noqa: ANN001
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


async def measure(url: str, counts: list[int], repeats: int) -> list[tuple[int, float, float, float, float]]:
    out = []
    for count in counts:
        db = Database(url if "sqlite" not in url else url.replace(".db", f"-{count}.db"))
        await db.migrate()
        store = RequestStore(db)
        last = await store.get(await fill(db, count))
        if not db.is_sqlite:  # what autovacuum does to a real queue: statistics, visibility map
            async with db.engine.connect() as conn:
                await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(sa.text("VACUUM ANALYZE requests"))
        assert await store.queue_position(last) == count - 1
        store.views.live = True  # as under a running change feed: the snapshot serves until the queue changes

        async def after_a_change(store: RequestStore = store, last: RequestRecord = last) -> None:
            store.views.everything_changed()  # what a deep queue's snapshot outlives for up to a second
            await store.queue_position(last)

        position = await timed(lambda store=store, last=last: store.queue_position(last), repeats)  # what pollers pay
        get = await timed(lambda store=store, last=last: store.get(last.id), repeats)
        snapshot = await timed(after_a_change, max(5, repeats // 10))
        out.append((count, get, position, snapshot))
        await db.close()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queued", default="1000,100000")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    counts = [int(c) for c in args.queued.split(",")]
    print("command:", " ".join([".venv/bin/python", *sys.argv]))
    results = {"sqlite": await measure(f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/q.db", counts, args.repeats)}
    for count in counts:
        name = await create_pg_database()
        try:
            results.setdefault("postgresql", []).extend(await measure(pg_database_url(name), [count], args.repeats))
        finally:
            await drop_pg_database(name)
    print(f"{'database':<11} {'queued':>8} {'get ms':>8} {'position ms':>12} {'position/get':>13} {'snapshot ms':>12} {'snapshot/get':>13}")
    for database, rows in results.items():
        for count, get, position, snapshot in rows:
            print(
                f"{database:<11} {count:>8} {get * 1000:>8.2f} {position * 1000:>12.3f} {position / get:>13.3f} "
                f"{snapshot * 1000:>12.1f} {snapshot / get:>13.1f}"
            )
    print("position ms: median of repeated queue_position calls for the last request while the queue does not")
    print("change (what pollers pay: the backend's snapshot answers); snapshot ms: the first position after the")
    print("queue changed (one read of the queue, shared by every poll until it changes again; a deep queue's")
    print("snapshot serves up to a second). PostgreSQL is VACUUM ANALYZEd after the bulk insert.")

if __name__ == "__main__":
    asyncio.run(main())
