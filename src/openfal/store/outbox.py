"""The webhook outbox: deliveries are rows written in the same transaction that
completes a request, then claimed by any process's deliverer with a short lock."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from openfal.store.db import Database
from openfal.store.schema import webhooks

_W = webhooks.c


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    request_id: str
    url: str
    body: str
    attempts: int


async def enqueue(conn: AsyncConnection, *, request_id: str, url: str, body: str) -> None:
    now = time.time()
    await conn.execute(
        webhooks.insert().values(
            request_id=request_id, url=url, body=body, state="pending", attempts=0, next_attempt_at=now, created_at=now
        )
    )


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db

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

    async def for_request(self, request_id: str) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(webhooks).where(_W.request_id == request_id).order_by(_W.id))).all()
        return [dict(r._mapping) for r in rows]

    async def _update(self, delivery_id: int, **values: Any) -> None:
        async with self.db.write() as conn:
            await conn.execute(webhooks.update().where(_W.id == delivery_id).values(**values))
