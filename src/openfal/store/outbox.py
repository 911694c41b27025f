"""The webhook outbox: deliveries are rows written in the same transaction that
completes a request, then claimed by any process's deliverer with a short lock."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from openfal.notify import Notifier
from openfal.store.changes import Transaction, Transactions
from openfal.store.db import Database
from openfal.store.schema import webhooks
from openfal.store.views import StatusCache

_W = webhooks.c


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    request_id: str
    url: str
    body: str
    attempts: int


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

    async def claim_due(self, *, limit: int, lock_seconds: float) -> list[Delivery]:
        now = time.time()
        due = (
            sa.select(_W.id)
            .where(
                _W.state == "pending",
                _W.next_attempt_at <= now,
                sa.or_(_W.locked_until.is_(None), _W.locked_until < now),
            )
            .order_by(_W.next_attempt_at)
            .limit(limit)
        )
        if not self.db.is_sqlite:
            due = due.with_for_update(skip_locked=True)
        async with self.db.write() as conn:
            rows = (
                await conn.execute(
                    webhooks.update()
                    .where(_W.id.in_(due.scalar_subquery()))
                    .values(locked_until=now + lock_seconds, attempts=_W.attempts + 1)
                    .returning(_W.id, _W.request_id, _W.url, _W.body, _W.attempts)
                )
            ).all()
        return [Delivery(r.id, r.request_id, r.url, r.body, r.attempts) for r in rows]

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
