"""The worker pools' rows, and their queues as autoscalers see them.

The pools are written at start from ``OPENFAL_POOLS`` (every process of a deployment
shares that setting); ``openfal_pool_queue`` (migration 0006) counts by them. The
Prometheus gauges read that view too, so KEDA's ``postgresql`` trigger and its
``prometheus`` one see the same figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from openfal.store.db import Database
from openfal.store.schema import worker_pools

#: the view's name (a stable interface: KEDA's queries name it)
VIEW = "openfal_pool_queue"
_READ = sa.text(f"SELECT pool, queued, running, oldest_wait_seconds FROM {VIEW} ORDER BY pool")


@dataclass(frozen=True, slots=True)
class PoolQueue:
    pool: str
    queued: int
    running: int
    #: seconds the oldest queued request has waited (0 when none waits)
    oldest_wait_seconds: float


class PoolStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def define(self, pools: Mapping[str, frozenset[str]]) -> None:
        """Make the pools these and only these (pool -> endpoint ids), in one transaction."""
        rows = [{"pool": pool, "endpoint_id": endpoint} for pool, endpoints in pools.items() for endpoint in sorted(endpoints)]
        async with self.db.write() as conn:
            if not self.db.is_sqlite:  # processes starting together take turns (SQLite's writer lock does it there)
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7242002)"))
            current = {(p, e) for p, e in (await conn.execute(sa.select(worker_pools.c.pool, worker_pools.c.endpoint_id))).all()}
            wanted = {(r["pool"], r["endpoint_id"]) for r in rows}
            if current == wanted:  # every process defines them at start: the usual case writes nothing
                return
            await conn.execute(worker_pools.delete())
            if rows:
                await conn.execute(worker_pools.insert(), rows)

    async def members(self) -> dict[str, frozenset[str]]:
        """pool -> its endpoint ids, as defined at start."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(worker_pools.c.pool, worker_pools.c.endpoint_id))).all()
        out: dict[str, set[str]] = {}
        for pool, endpoint in rows:
            out.setdefault(pool, set()).add(endpoint)
        return {pool: frozenset(endpoints) for pool, endpoints in out.items()}

    async def queues(self) -> list[PoolQueue]:
        async with self.db.read() as conn:
            rows = (await conn.execute(_READ)).all()
        return [PoolQueue(pool, int(queued), int(running), max(0.0, float(wait))) for pool, queued, running, wait in rows]
