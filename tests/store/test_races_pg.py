"""Claims that truly overlap: several worker processes (each its own engine and
connection pool on the same database) claiming at the same moment. On PostgreSQL
these transactions run concurrently, so the key row lock and SKIP LOCKED are what keep
the answers right; SQLite runs them one at a time and must give the same answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from openfal.store.api_keys import KeyStore
from openfal.store.db import Database
from openfal.store.requests import RequestStore

CLAIMERS = 6


@pytest.fixture
async def processes(db: Database, db_url: str) -> AsyncIterator[list[RequestStore]]:
    """One request store per worker process, each on its own engine."""
    databases = [Database(db_url) for _ in range(CLAIMERS)]
    yield [RequestStore(d) for d in databases]
    for database in databases:
        await database.close()


async def claim_all_at_once(stores: list[RequestStore]) -> list[str]:
    barrier = asyncio.Barrier(len(stores))

    async def claim(index: int, store: RequestStore) -> list[str]:
        await barrier.wait()
        claimed = await store.claim(backends=["builtin"], worker_id=f"w{index}", lease_seconds=30)
        return [r.id for r in claimed]

    results = await asyncio.gather(*(claim(i, s) for i, s in enumerate(stores)))
    return [rid for ids in results for rid in ids]


async def test_concurrent_claims_never_start_more_than_a_keys_max_concurrent(
    db: Database, processes: list[RequestStore], new_request: Callable[..., dict]
) -> None:
    key, _ = await KeyStore(db).create("customer")
    await KeyStore(db).set_limits(key.id, max_concurrent=2)
    store = RequestStore(db)
    for _ in range(10):
        await store.insert(**new_request(key_id=key.id))

    first = await claim_all_at_once(processes)
    assert len(first) == 2, first

    done = await store.get(first[0])
    assert done is not None
    assert await store.complete(done, result_status=200, result_body={}, worker_id=done.worker_id, attempt=done.attempts)
    second = await claim_all_at_once(processes)
    assert len(second) == 1 and second[0] not in first


async def test_concurrent_claims_take_each_request_once(
    db: Database, processes: list[RequestStore], new_request: Callable[..., dict]
) -> None:
    """Without a key limit every claimer gets a different request, none gets two."""
    store = RequestStore(db)
    for _ in range(CLAIMERS - 2):
        await store.insert(**new_request())

    claimed = await claim_all_at_once(processes)
    assert len(claimed) == len(set(claimed)) == CLAIMERS - 2
