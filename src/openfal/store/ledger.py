"""The usage ledger and key balances: every money movement (accounting.py decides
the amounts) but a submit's reserve, which is written with its request (see
submit_statements.py), and usage reports per key, endpoint and period."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from openfal.models import RequestRecord, Usage
from openfal.store.changes import Transaction
from openfal.store.db import Database
from openfal.store.schema import api_keys, ledger

_L = ledger.c
PERIODS = {"hour": 3600, "day": 86400, "total": 0}
#: built once: their values are bound, not built into a new statement each time
_INSERT = ledger.insert()
_BALANCE = api_keys.c.balance_micros
_SETTLE = (
    api_keys.update()
    .where(api_keys.c.id == sa.bindparam("k_id"), _BALANCE.is_not(None))
    .values(balance_micros=_BALANCE + sa.bindparam("reserved", type_=sa.BigInteger()) - sa.bindparam("charge", type_=sa.BigInteger()))
)


async def credit(conn: AsyncConnection, key_id: str, amount_micros: int) -> None:
    """Top up (or, negative, debit) a key; a metered-only key becomes credit-limited."""
    await conn.execute(
        api_keys.update()
        .where(api_keys.c.id == key_id)
        .values(balance_micros=sa.func.coalesce(api_keys.c.balance_micros, 0) + amount_micros)
    )
    await conn.execute(ledger.insert().values(entry(key_id, None, None, "credit", amount_micros)))


@dataclass(frozen=True, slots=True)
class Billed:
    """What a charge row keeps beside its amount, for the Platform API's usage line
    items (unit x units) and analytics (status class)."""

    unit: str
    units: float
    status_code: int


async def settle(tx: Transaction, record: RequestRecord, *, reserved: int, charge: int, got: Usage, billed: Billed) -> None:
    """Release the reserve (a submit took it: see submit_statements.py) and charge
    what was delivered, in one go. The charge row carries the request's queue wait and
    run time (analytics percentiles), so it outlives the request's own record."""
    if record.key_id is not None:
        await tx.conn.execute(_SETTLE, {"k_id": record.key_id, "reserved": reserved, "charge": charge})
    release = entry(record.key_id, record.id, record.endpoint_id, "release", reserved)
    charge_entry = entry(record.key_id, record.id, record.endpoint_id, "charge", -charge, got, outcome=record.error_type or "ok")
    ended = record.completed_at or time.time()
    charge_entry |= {
        "status_code": billed.status_code,
        "unit": billed.unit,
        "units": billed.units,
        "queue_seconds": max(0.0, (record.started_at or ended) - record.created_at),
        "run_seconds": max(0.0, ended - record.started_at) if record.started_at is not None else None,
    }
    await tx.conn.execute(_INSERT, [release, charge_entry])  # both rows in one statement


def entry(
    key_id: str | None, request_id: str | None, endpoint_id: str | None, kind: str, amount: int, got: Usage = Usage(), *, outcome: str | None = None
) -> dict[str, Any]:
    """A ledger row's values (every column: the submit's statement binds them all)."""
    return {
        "key_id": key_id,
        "request_id": request_id,
        "endpoint_id": endpoint_id,
        "kind": kind,
        "amount_micros": amount,
        "images": got.images,
        "megapixels": got.megapixels,
        "video_seconds": got.video_seconds,
        "outcome": outcome,
        "created_at": time.time(),
        "status_code": None,
        "unit": None,
        "units": None,
        "queue_seconds": None,
        "run_seconds": None,
        "rolled_up": False,
    }


@dataclass(frozen=True, slots=True)
class UsageRow:
    key_id: str | None
    endpoint_id: str | None
    period_start: float | None
    requests: int
    succeeded: int
    images: int
    megapixels: float
    video_seconds: float
    cost_micros: int


async def usage(
    db: Database, *, key_id: str | None = None, since: float | None = None, until: float | None = None, period: str = "day"
) -> list[UsageRow]:
    seconds = PERIODS[period]
    bucket: sa.Label[Any]
    if not seconds:
        bucket = sa.literal(None).label("period_start")
    elif db.is_sqlite:
        bucket = (sa.cast(_L.created_at / seconds, sa.Integer) * seconds).label("period_start")
    else:
        bucket = (sa.func.floor(_L.created_at / seconds) * seconds).label("period_start")
    query = (
        sa.select(
            _L.key_id,
            _L.endpoint_id,
            bucket,
            sa.func.count(),
            sa.func.sum(sa.case((_L.outcome == "ok", 1), else_=0)),
            sa.func.sum(_L.images),
            sa.func.sum(_L.megapixels),
            sa.func.sum(_L.video_seconds),
            -sa.func.sum(_L.amount_micros),
        )
        .where(_L.kind == "charge")
        .group_by(_L.key_id, _L.endpoint_id, bucket)
        .order_by(bucket, _L.key_id, _L.endpoint_id)
    )
    if key_id is not None:
        query = query.where(_L.key_id == key_id)
    if since is not None:
        query = query.where(_L.created_at >= since)
    if until is not None:
        query = query.where(_L.created_at < until)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [
        UsageRow(r[0], r[1], float(r[2]) if r[2] is not None else None, int(r[3]), int(r[4] or 0), int(r[5] or 0), float(r[6] or 0), float(r[7] or 0), int(r[8] or 0))
        for r in rows
    ]


async def ledger_sum(db: Database, key_id: str) -> int:
    """The sum of every ledger entry of a key: equals its balance for credit keys."""
    async with db.read() as conn:
        total = await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(_L.amount_micros), 0)).where(_L.key_id == key_id))
        return int(total.scalar() or 0)


async def balance(db: Database, key_id: str) -> int | None:
    async with db.read() as conn:
        return (await conn.execute(sa.select(api_keys.c.balance_micros).where(api_keys.c.id == key_id))).scalar()
