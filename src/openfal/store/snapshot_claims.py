"""A claim's candidate keys from this process's queue snapshot, in place of the
candidates query.

The candidates query (claim_statements.py) probes each waiting key's head: a claim on
PostgreSQL then costs ~10-15 us per key with work queued, and 100 waiting keys put it
over 5 ms. A process whose snapshot of the backend's queue is current (every change
since it was read applied to it, views.py) knows those heads already: the keys come
from the snapshot in claim order (``QueueSnapshot.claim_order``), and one statement
(``ClaimStatements.limits_of``) tells which keys run their limit, to be passed over,
and the limits of the chosen ones. The take itself is the same statement as before
(a chosen key's next queued requests, guarded), so a snapshot behind another process's
claim only costs a key that yields nothing and the next is asked; a claim that gets
nothing this way asks the database as before.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from openfal.store.claim_statements import NO_KEY
from openfal.store.views import QueueSnapshot

#: a candidate as the candidates query gives it: (head seq, key, the key's limit)
Candidate = tuple[int | None, str | None, int | None]


async def candidates_from(
    conn: AsyncConnection, snap: QueueSnapshot, limits_of: Any, count: int, default_limit: int | None, saturated_before: set[str]
) -> tuple[list[Candidate], set[str]]:
    """Up to ``count`` candidate keys in claim order (no head seq: the take finds it),
    the keys at their limit passed over; a key without a row has ``default_limit``, as
    in the candidates query. Also returns the keys at their limit now: passed back as
    ``saturated_before`` by the next claim, whose first guess of its keys then already
    passes them over (a deep queue of keys at their limit is the same keys claim after
    claim), so the guess is right, and one statement enough, unless the set changed."""
    order = snap.claim_order(count, skip=saturated_before)
    saturated, limits = await _limits(conn, limits_of, order)
    if saturated != saturated_before:
        order = snap.claim_order(count, skip=saturated)
        unknown = [key for key in order if key != NO_KEY and key not in limits]
        if unknown:  # a key that reached its limit since the first statement is passed over, not unlimited
            filled, more = await _limits(conn, limits_of, unknown)
            limits |= more
            order = [key for key in order if key not in filled]
    return [(None, None, None) if key == NO_KEY else (None, key, limits.get(key, default_limit)) for key in order], saturated


async def _limits(conn: AsyncConnection, limits_of: Any, keys: list[str]) -> tuple[set[str], dict[str, int | None]]:
    """(the keys running their limit, the limit of each other key of ``keys`` that has a row)."""
    saturated: set[str] = set()
    limits: dict[str, int | None] = {}
    for key, limit, full in (await conn.execute(limits_of, {"keys": [key for key in keys if key != NO_KEY]})).all():
        if full:
            saturated.add(key)
        else:
            limits[key] = limit
    return saturated, limits
