"""The worker registry: every process running workers reports itself every few seconds
(its slots, what is running, each backend's status), so an API node can tell operators
and load balancers what capacity exists without reaching into other processes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from openfal.store.db import Database
from openfal.store.schema import workers

_W = workers.c

#: how long the live workers' slot count is reused (every queued status poll asks for it)
SLOTS_CACHE_SECONDS = 10.0


class WorkerRegistry:
    """Workers report on their heartbeat period; one silent for ``alive_seconds`` (three
    periods by default, as for leases) counts as gone. This is the one definition of a
    live worker: the admin listing, ``/health/ready``, the metrics and queued requests'
    ``eta_seconds`` all count through here."""

    def __init__(self, db: Database, alive_seconds: float = 15.0) -> None:
        self.db = db
        self.alive_seconds = alive_seconds
        self._slots: tuple[float, dict[str, int]] | None = None

    async def report(self, worker_id: str, *, hostname: str, pid: int, started_at: float, backends: dict[str, Any]) -> None:
        now = time.time()
        async with self.db.write() as conn:
            updated = await conn.execute(workers.update().where(_W.id == worker_id).values(last_seen=now, backends=backends))
            if updated.rowcount == 0:
                await conn.execute(
                    workers.insert().values(
                        id=worker_id, hostname=hostname, pid=pid, started_at=started_at, last_seen=now, backends=backends
                    )
                )

    async def remove(self, worker_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(workers.delete().where(_W.id == worker_id))

    async def listing(self, *, include_gone: bool = True) -> list[dict[str, Any]]:
        """Registered workers, newest report first, each with ``alive``."""
        now = time.time()
        query = sa.select(workers).order_by(_W.last_seen.desc())
        if not include_gone:
            query = query.where(_W.last_seen >= now - self.alive_seconds)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [{**dict(r._mapping), "alive": r.last_seen >= now - self.alive_seconds} for r in rows]

    async def capacity(self) -> dict[str, dict[str, int]]:
        """backend -> {"workers", "slots", "busy"} over the live workers."""
        totals: dict[str, dict[str, int]] = {}
        for worker in await self.listing(include_gone=False):
            for backend, info in worker["backends"].items():
                total = totals.setdefault(backend, {"workers": 0, "slots": 0, "busy": 0})
                total["workers"] += 1
                total["slots"] += int(info.get("slots", 0))
                total["busy"] += int(info.get("busy", 0))
        return totals

    async def slots(self, backend: str) -> int:
        """Slots the live workers have for ``backend``, read at most every ``SLOTS_CACHE_SECONDS``."""
        if self._slots is None or time.monotonic() - self._slots[0] >= SLOTS_CACHE_SECONDS:
            self._slots = (time.monotonic(), {name: total["slots"] for name, total in (await self.capacity()).items()})
        return self._slots[1].get(backend, 0)

    async def pool_capacity(self, pools: Mapping[str, frozenset[str]]) -> dict[str, dict[str, int]]:
        """pool -> {"workers", "slots", "busy"} over the live workers that claim only
        that pool's endpoints (as ``OPENFAL_WORKER_MODELS`` set to the pool's names
        does); a worker serving every endpoint belongs to no pool."""
        totals = {pool: {"workers": 0, "slots": 0, "busy": 0} for pool in pools}
        for worker in await self.listing(include_gone=False):
            for info in worker["backends"].values():
                claimed = info.get("endpoints")
                if claimed is None:
                    continue
                for pool, endpoints in pools.items():
                    if set(claimed) <= endpoints:
                        total = totals[pool]
                        total["workers"] += 1
                        total["slots"] += int(info.get("slots", 0))
                        total["busy"] += int(info.get("busy", 0))
                        break
        return totals

    async def forget_before(self, cutoff: float) -> int:
        """Drop workers that stopped reporting (killed rather than stopped) before ``cutoff``."""
        async with self.db.write() as conn:
            return (await conn.execute(workers.delete().where(_W.last_seen < cutoff))).rowcount
