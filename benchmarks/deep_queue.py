"""Deep queues for the benchmarks: bulk-filled queued requests, and the cost of a claim
at a given depth (queue_overhead.py's ``--depth`` figures).

Run alone, it prints a claim's p50 at each depth on SQLite and PostgreSQL, with the
first depth as the baseline:

    .venv/bin/python benchmarks/deep_queue.py [--queued 100,100000] [--keys 100] [--held]

A queue made for a deployment waits on its keys' limits: each key has ``max_concurrent = 1`` and
one request already running (a lease a day long), so no worker drains it while the
figures beside it are taken, and every claim still has to look past it.
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
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from openfal.store.api_keys import KeyStore
from openfal.store.db import Database
from openfal.store.listener import change_feed
from openfal.store.requests import RequestStore
from openfal.store.schema import requests

CHUNK = 10_000


def _row(backend: str, key_id: str, status: str, at: float, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()), "app": "openfal/utils", "endpoint_id": "openfal/utils/echo", "backend": backend,
        "key_id": key_id, "status": status, "priority": 0, "input": {"i": 1}, "base_url": "http://bench", "store_io": True,
        "created_at": at, "attempts": 0, "cancel_requested": False, "backend_state": {}, "version": 0, **extra,
    }


async def fill(db: Database, *, depth: int, keys: int, backend: str, held: bool) -> tuple[str, str]:
    """``depth`` queued requests of ``backend``, round-robin over ``keys`` new keys;
    ``held``: each key at its limit (one request running on a lease a day long).
    Returns the id of the last queued request (the deepest) and its key's secret."""
    now = time.time()
    made = [await KeyStore(db).create(f"deep{i}", limits={"max_concurrent": 1} if held else None) for i in range(keys)]
    names = [key.id for key, _ in made]
    async with db.write() as conn:
        if held:
            lease = now + 86_400
            await conn.execute(requests.insert(), [_row(backend, k, "IN_PROGRESS", now, worker_id="bench-holder", lease_expires_at=lease, attempts=1, started_at=now) for k in names])
        last = ""
        for start in range(0, depth, CHUNK):
            rows = [_row(backend, names[i % keys], "IN_QUEUE", now + i * 1e-6) for i in range(start, min(depth, start + CHUNK))]
            await conn.execute(requests.insert(), rows)
            last = rows[-1]["id"]
    if not db.is_sqlite:  # what autovacuum does to a real queue: statistics, visibility map
        async with db.engine.connect() as conn:
            await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(sa.text("VACUUM ANALYZE requests"))
    return last, made[(depth - 1) % keys][1]


async def claim_p50(url: str, *, depth: int, keys: int, claims: int = 200, held: bool = False, feed: bool = True) -> float:
    """Median seconds of one claim (one request taken) from a queue ``depth`` deep over
    ``keys`` keys, on a fresh database at ``url``; each request taken is followed by a
    new one of its key, submitted through the store (untimed), so the depth holds, as in
    a steady state. ``held``: those keys are at their limit, and the claims take the
    requests of one more key (a deployment's deep queue of customers waiting on their
    limits). ``feed``: the claimer's change feed runs, as a worker's does, so its claims
    choose keys from its queue snapshot (the first claim reads it, untimed); without it
    every claim asks the database (the candidates query)."""
    db = Database(url)
    feed_task = None
    try:
        await db.migrate()
        await fill(db, depth=depth, keys=keys, backend="bench", held=held)
        if held:
            free, _ = await KeyStore(db).create("free")
            async with db.write() as conn:
                await conn.execute(requests.insert(), [_row("bench", free.id, "IN_QUEUE", time.time()) for _ in range(10)])
        store = RequestStore(db)
        if feed:
            feed_task = change_feed(db, store.notifier, store.views, database_url=url, interval=1.0)
            feed_task.start()
            for _ in range(100):  # connected: the views are live
                if store.views.live:
                    break
                await asyncio.sleep(0.05)
            assert store.views.live, "the change feed did not connect"
        times = []
        for i in range(claims + 1):
            started = time.perf_counter()
            taken = await store.claim(backends=["bench"], worker_id=f"w{i % 4}", lease_seconds=60)
            if i:  # the first reads the snapshot
                times.append(time.perf_counter() - started)
            assert taken, "the queue ran dry"
            for r in taken:  # a new arrival for each one taken: the depth holds
                row = _row("bench", r.key_id, "IN_QUEUE", time.time())
                await store.insert(**{k: v for k, v in row.items() if k not in {"status", "attempts", "version", "cancel_requested", "backend_state"}})
        return statistics.median(times)
    finally:
        if feed_task is not None:
            await feed_task.close()
        await db.close()


def fill_deployment(database_url: str, *, depth: int, keys: int) -> tuple[str, str]:
    """Fill a deployment's database (migrated, no server running yet) with a held
    queue of ``builtin``; the id of its deepest request and its key's secret."""

    async def run() -> tuple[str, str]:
        db = Database(database_url)
        try:
            return await fill(db, depth=depth, keys=keys, backend="builtin", held=True)
        finally:
            await db.close()

    return asyncio.run(run())


async def _main() -> None:
    from tests.support import create_pg_database, drop_pg_database, pg_database_url

    parser = argparse.ArgumentParser(description="A claim's p50 at each depth, SQLite and PostgreSQL")
    parser.add_argument("--queued", default="100,100000")
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--held", action="store_true", help="the keys at their limit; claims take one more key's requests")
    parser.add_argument("--no-feed", action="store_true", help="no change feed: every claim asks the database for the keys' heads")
    args = parser.parse_args()
    depths = [int(d) for d in args.queued.split(",")]
    print("command:", " ".join([".venv/bin/python", *sys.argv]))
    for database in ("sqlite", "postgresql"):
        base = None
        for depth in depths:
            if database == "sqlite":
                p50 = await claim_p50(f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/claims.db", depth=depth, keys=args.keys, held=args.held, feed=not args.no_feed)
            else:
                name = await create_pg_database()
                try:
                    p50 = await claim_p50(pg_database_url(name), depth=depth, keys=args.keys, held=args.held, feed=not args.no_feed)
                finally:
                    await drop_pg_database(name)
            base = base or p50
            print(f"{database:<11} {depth:>8} queued, {args.keys} keys{' held' if args.held else ''}{' no feed' if args.no_feed else ''}: claim p50 {p50 * 1000:7.2f} ms  ({p50 / base:.2f}x the first depth)")


if __name__ == "__main__":
    asyncio.run(_main())
