"""The webhook outbox: deliveries are rows written in the same transaction that
completes a request, then claimed by any process's deliverer with a short lock."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from openfal.notify import Notifier
from openfal.store.changes import Transaction, Transactions
from openfal.store.db import Database
from openfal.store.schema import requests, webhooks
from openfal.store.views import StatusCache

_W = webhooks.c
#: a claim looks again (past what other deliverers took meanwhile) this many times at most
CLAIM_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    request_id: str
    url: str
    body: str
    attempts: int
    #: the API key of the request ("" without one): deliveries are fair between keys
    key: str = ""


async def enqueue(tx: Transaction, *, request_id: str, url: str, body: str) -> None:
    """A delivery, due now, in the transaction that ends its request; deliverers are
    woken when it commits."""
    now = time.time()
    await tx.conn.execute(
        webhooks.insert().values(
            request_id=request_id, url=url, body=body, state="pending", attempts=0, next_attempt_at=now, created_at=now
        )
    )
    tx.notice("webhook", request_id)


class OutboxStore:
    def __init__(self, db: Database, changes: Transactions | None = None) -> None:
        self.db = db
        #: the process's transactions, so a redelivery wakes the deliverers as it commits
        self.changes = changes or Transactions(db, StatusCache(), Notifier())

    async def next_due(self) -> float | None:
        """When the next pending delivery may be claimed (its retry time, or its lock's
        end if a deliverer holds it); None when none is pending. A read: an idle
        deliverer looks without a write transaction."""
        starts = sa.case((_W.locked_until > _W.next_attempt_at, _W.locked_until), else_=_W.next_attempt_at)
        async with self.db.read() as conn:
            due = (await conn.execute(sa.select(sa.func.min(starts)).where(_W.state == "pending"))).scalar()
        return float(due) if due is not None else None

    async def claim_due(self, *, limit: int, lock_seconds: float, per_key: int | None = None, busy: dict[str, int] | None = None) -> list[Delivery]:
        """Lock up to ``limit`` due deliveries for one attempt each, oldest due first.
        ``per_key``: at most that many of one key's deliveries in flight, counting the
        caller's ``busy`` ones (key -> in flight): one key's deliveries, however many
        are due, never take every slot."""
        now = time.time()
        ready = [_W.state == "pending", _W.next_attempt_at <= now, sa.or_(_W.locked_until.is_(None), _W.locked_until < now)]
        taken = dict(busy or {})
        claimed: list[Delivery] = []
        tried: list[int] = []
        async with self.db.write() as conn:
            for _ in range(CLAIM_ROUNDS):  # again, past the ones other deliverers took meanwhile
                chosen = await self._choose(conn, ready, tried, limit - len(claimed), per_key, taken)
                if not chosen:
                    break
                tried += chosen
                which = _W.id.in_(list(chosen))
                if not self.db.is_sqlite:  # skip, not wait for, what another deliverer holds
                    which = _W.id.in_(sa.select(_W.id).where(which, *ready).with_for_update(skip_locked=True).scalar_subquery())
                rows = (
                    await conn.execute(
                        webhooks.update()
                        .where(which, *ready)
                        .values(locked_until=now + lock_seconds, attempts=_W.attempts + 1)
                        .returning(_W.id, _W.request_id, _W.url, _W.body, _W.attempts)
                    )
                ).all()
                for r in rows:
                    claimed.append(Delivery(r.id, r.request_id, r.url, r.body, r.attempts, chosen[r.id]))
                    taken[chosen[r.id]] = taken.get(chosen[r.id], 0) + 1
                if len(claimed) >= limit or len(rows) == len(chosen):
                    break
        return claimed

    async def _choose(
        self, conn: AsyncConnection, ready: list[Any], tried: list[int], limit: int, per_key: int | None, taken: dict[str, int]
    ) -> dict[int, str]:
        """Up to ``limit`` due deliveries (id -> key), oldest due first, none of a key
        already holding ``per_key`` (``taken``), none of ``tried``."""
        key = sa.func.coalesce(requests.c.key_id, "")
        rank = sa.func.row_number().over(partition_by=key, order_by=(_W.next_attempt_at, _W.id))
        ranked = (
            sa.select(_W.id, _W.next_attempt_at, key.label("key"), rank.label("rank"))
            .select_from(webhooks.outerjoin(requests, requests.c.id == _W.request_id))
            .where(*ready, *([_W.id.not_in(tried)] if tried else []))
            .subquery()
        )
        # each key's oldest due ones first, at most per_key of them: enough to fill the
        # free slots whatever the busy keys may not take
        due = sa.select(ranked.c.id, ranked.c.key).order_by(ranked.c.next_attempt_at, ranked.c.id)
        if per_key is not None:
            due = due.where(ranked.c.rank <= per_key)
        chosen: dict[int, str] = {}
        counted = dict(taken)
        for delivery_id, owner in (await conn.execute(due.limit(limit + sum(taken.values())))).all():
            if len(chosen) == limit:
                break
            if per_key is not None and counted.get(owner, 0) >= per_key:
                continue
            chosen[delivery_id] = owner
            counted[owner] = counted.get(owner, 0) + 1
        return chosen

    async def delivered(self, delivery_id: int, status: int) -> None:
        await self._update(delivery_id, state="delivered", delivered_at=time.time(), last_status=status, last_error=None)

    async def failed(
        self, delivery_id: int, *, error: str, status: int | None, retry_at: float | None
    ) -> None:
        values: dict[str, Any] = {"last_error": error[:2000], "last_status": status, "locked_until": None}
        if retry_at is None:
            values["state"] = "failed"
        else:
            values["next_attempt_at"] = retry_at
        await self._update(delivery_id, **values)

    async def recent(
        self, *, state: str | None = None, request_id: str | None = None, limit: int = 50, before: int | None = None
    ) -> list[dict[str, Any]]:
        """The delivery log, newest first (without the bodies, which a request's result holds)."""
        query = sa.select(*(c for c in webhooks.c if c.name not in {"body", "locked_until"})).order_by(_W.id.desc()).limit(limit)
        if state is not None:
            query = query.where(_W.state == state)
        if request_id is not None:
            query = query.where(_W.request_id == request_id)
        if before is not None:
            query = query.where(_W.id < before)
        async with self.db.read() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    async def redeliver(self, delivery_id: int) -> bool:
        """Send a delivery again now, with a fresh round of attempts (after a receiver
        was fixed, or to replay one it lost). False if there is no such delivery."""
        async with self.changes.begin() as tx:
            result = await tx.conn.execute(
                webhooks.update()
                .where(_W.id == delivery_id)
                .values(state="pending", attempts=0, next_attempt_at=time.time(), locked_until=None, delivered_at=None)
            )
            if result.rowcount == 1:
                tx.notice("webhook", str(delivery_id))
        return result.rowcount == 1

    async def for_request(self, request_id: str) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(webhooks).where(_W.request_id == request_id).order_by(_W.id))).all()
        return [dict(r._mapping) for r in rows]

    async def _update(self, delivery_id: int, **values: Any) -> None:
        async with self.db.write() as conn:
            await conn.execute(webhooks.update().where(_W.id == delivery_id).values(**values))
