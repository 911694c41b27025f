"""A submit's reserve, ledger row, request and notice are written together or not at
all; on PostgreSQL a submit without per-key limits is a single statement."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from openfal.errors import InsufficientCredit
from openfal.notify import Notifier
from openfal.store import ledger
from openfal.store.api_keys import KeyStore
from openfal.store.changes import CHANNEL
from openfal.store.db import Database
from openfal.store.requests import KeyQueueFull, RequestStore
from openfal.store.schema import requests

CLAIM = {"backends": ["builtin"], "lease_seconds": 30}


async def test_a_submit_without_limits_is_one_statement_on_postgresql(db: Database, new_request: Callable[..., dict]) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite runs them in turn: it has no data-modifying CTEs and no round trips to save")
    store = RequestStore(db)
    statements: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    record = await store.insert(reserve=0, **new_request(key_id="k"))
    assert len(statements) == 1
    assert record.reserved_micros == 0 and record.seq > 0


async def test_a_reserve_is_taken_with_its_request(db: Database, new_request: Callable[..., dict]) -> None:
    key, _ = await KeyStore(db).create("k", credit_micros=50_000)
    record = await RequestStore(db).insert(reserve=20_000, **new_request(key_id=key.id))
    assert record.reserved_micros == 20_000
    assert await ledger.balance(db, key.id) == 30_000
    assert await ledger.ledger_sum(db, key.id) == 30_000  # the credit and the reserve's row


async def test_a_short_balance_stores_neither_the_request_nor_its_ledger_row(db: Database, new_request: Callable[..., dict]) -> None:
    key, _ = await KeyStore(db).create("k", credit_micros=5_000)
    notifier = Notifier()
    store = RequestStore(db, notifier=notifier)
    with pytest.raises(InsufficientCredit):
        await store.insert(reserve=10_000, **new_request(key_id=key.id))
    async with db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(requests))).scalar() == 0
    assert await ledger.balance(db, key.id) == 5_000
    assert await ledger.ledger_sum(db, key.id) == 5_000
    assert not notifier._work.is_set()


async def test_a_metered_key_is_never_short(db: Database, new_request: Callable[..., dict]) -> None:
    key, _ = await KeyStore(db).create("k")
    record = await RequestStore(db).insert(reserve=10_000, **new_request(key_id=key.id))
    assert record.reserved_micros == 10_000
    assert await ledger.balance(db, key.id) is None


@pytest.mark.postgres
async def test_the_notice_of_a_new_request_carries_its_seq(pg_url: str, new_request: Callable[..., dict]) -> None:
    """Other processes place it in their queue snapshots by the seq its INSERT chose."""
    db = Database(pg_url)
    await db.migrate()
    payloads: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    await listener.add_listener(CHANNEL, lambda *args: payloads.put_nowait(args[3]))
    try:
        record = await RequestStore(db).insert(reserve=0, **new_request())
        kind, _, delta = (await asyncio.wait_for(payloads.get(), 10)).partition(" ")
        assert kind == "work:builtin"
        assert json.loads(delta)["add"][0][0] == record.seq
    finally:
        await listener.close()
        await db.close()


@pytest.mark.postgres
async def test_a_refused_submit_of_a_limited_key_tells_nobody(pg_url: str, new_request: Callable[..., dict]) -> None:
    """Its notice was sent inside the transaction the limit rolled back: the first one
    another process hears is the next request's."""
    db = Database(pg_url)
    await db.migrate()
    key, _ = await KeyStore(db).create("k")
    store = RequestStore(db)
    payloads: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    await listener.add_listener(CHANNEL, lambda *args: payloads.put_nowait(args[3]))
    try:
        first = await store.insert(max_queued=1, **new_request(key_id=key.id))
        with pytest.raises(KeyQueueFull):
            await store.insert(max_queued=1, **new_request(key_id=key.id))
        await store.claim(worker_id="w", **CLAIM)
        after = await store.insert(max_queued=1, **new_request(key_id=key.id))
        seqs: list[Any] = []
        while len(seqs) < 2:
            delta = json.loads((await asyncio.wait_for(payloads.get(), 10)).partition(" ")[2] or "{}")
            seqs += [added[0] for added in delta.get("add", ())]
        assert seqs == [first.seq, after.seq]
    finally:
        await listener.close()
        await db.close()
