"""The request store on SQLite and PostgreSQL: claim order, exclusive claims,
compare-and-swap completion, leases, deadlines, retention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from openfal.accounting import Accounts, PriceList
from openfal.config import Settings
from openfal.endings import Endings
from openfal.errors import RunnerLost
from openfal.media.local import LocalMediaStore
from openfal.models import LogEntry, RequestRecord, Status
from openfal.reaper import Reaper
from openfal.store.db import Database
from openfal.store.media_index import MediaIndex
from openfal.store.requests import RequestStore
from openfal.store.schema import request_logs, requests, webhooks

CLAIM = {"backends": ["builtin"], "lease_seconds": 30}


def make_reaper(db: Database, store: RequestStore, tmp_path: Path, **settings: object) -> Reaper:
    return Reaper(
        settings=Settings(data_dir=tmp_path, **settings),
        store=store,
        endings=Endings(store, Accounts(PriceList())),
        media=LocalMediaStore(tmp_path / "media"),
        media_index=MediaIndex(db, 60),
    )


async def expire_lease(db: Database, request_id: str) -> None:
    """Time travel: the lease ran out a second ago (no sleeping for it)."""
    async with db.write() as conn:
        await conn.execute(sa.update(requests).where(requests.c.id == request_id).values(lease_expires_at=time.time() - 1))


async def test_claims_go_by_priority_then_fifo(db: Database, new_request: Callable[..., dict]) -> None:
    """normal before low, and first in first out within a priority."""
    store = RequestStore(db)
    low = await store.insert(**new_request(priority=1))
    first = await store.insert(**new_request())
    second = await store.insert(**new_request())
    order = []
    for _ in range(3):
        order += [r.id for r in await store.claim(worker_id="w", **CLAIM)]
    assert order == [first.id, second.id, low.id]


async def test_batch_claims_take_only_the_same_batch_key(db: Database, new_request: Callable[..., dict]) -> None:
    """A batch is the head request plus queued requests with its batch key, up to the limit."""
    store = RequestStore(db)
    a1 = await store.insert(**new_request(batch_key="a"))
    await store.insert(**new_request(batch_key="b"))
    a2 = await store.insert(**new_request(batch_key="a"))
    a3 = await store.insert(**new_request(batch_key="a"))
    claimed = await store.claim(worker_id="w", batch_limit=2, **CLAIM)
    assert [r.id for r in claimed] == [a1.id, a2.id]
    assert (await store.get(a3.id)).status is Status.IN_QUEUE


async def test_concurrent_claims_on_one_pool_never_take_the_same_request(db: Database, new_request: Callable[..., dict]) -> None:
    """Forty claims gathered on one Database take each of 30 requests exactly once."""
    store = RequestStore(db)
    for _ in range(30):
        await store.insert(**new_request())
    results = await asyncio.gather(*(store.claim(worker_id=f"w{i}", **CLAIM) for i in range(40)))
    ids = [r.id for batch in results for r in batch]
    assert len(ids) == 30 and len(set(ids)) == 30


async def test_concurrent_claimers_on_two_pools_never_take_the_same_request(db_url: str, db: Database, new_request: Callable[..., dict]) -> None:
    """Forty claims racing from two Database objects (two processes) take each of 30 requests exactly once."""
    other = Database(db_url)
    try:
        stores = [RequestStore(db), RequestStore(other)]
        for _ in range(30):
            await stores[0].insert(**new_request())
        results = await asyncio.gather(*(stores[i % 2].claim(worker_id=f"w{i}", **CLAIM) for i in range(40)))
        ids = [r.id for batch in results for r in batch]
        assert len(ids) == 30 and len(set(ids)) == 30
        assert all(r.worker_id == f"w{i}" and r.attempts == 1 for i, batch in enumerate(results) for r in batch)
    finally:
        await other.close()


async def test_claim_skips_requests_past_their_start_deadline(db: Database, new_request: Callable[..., dict]) -> None:
    """A request whose X-Fal-Request-Timeout passed is never started; the one behind it is."""
    store = RequestStore(db)
    late = await store.insert(**new_request(start_deadline=time.time() - 1))
    timely = await store.insert(**new_request(start_deadline=time.time() + 60))
    assert [r.id for r in await store.claim(worker_id="w", **CLAIM)] == [timely.id]
    assert await store.claim(worker_id="w", **CLAIM) == []
    assert (await store.get(late.id)).status is Status.IN_QUEUE


async def test_completion_is_a_compare_and_swap(db: Database, new_request: Callable[..., dict]) -> None:
    """Only the holder of the current attempt completes, once; what the caller does in
    the same transaction when it did (settle, enqueue a webhook) runs exactly once."""
    store = RequestStore(db)
    await store.insert(**new_request())
    (record,) = await store.claim(worker_id="w1", **CLAIM)
    calls = []

    async def complete(**kwargs: Any) -> RequestRecord | None:
        async with store.transaction() as tx:
            done = await store.complete(record, result_status=200, tx=tx, **kwargs)
            if done is not None:
                calls.append(done.id)
        return done

    assert await complete(result_body={}, worker_id="w2", attempt=1) is None
    assert await complete(result_body={}, worker_id="w1", attempt=2) is None
    done = await complete(result_body={"ok": 1}, worker_id="w1", attempt=1)
    assert done is not None and done.status is Status.COMPLETED and done.result_body == {"ok": 1}
    assert await complete(result_body={}, worker_id="w1", attempt=1) is None
    assert calls == [record.id]


async def test_completion_and_its_side_effects_commit_together(db: Database, new_request: Callable[..., dict]) -> None:
    """The caller's transaction sees the COMPLETED row; when what follows in it fails,
    neither its writes nor the completion are kept."""
    store = RequestStore(db)
    await store.insert(**new_request())
    (record,) = await store.claim(worker_id="w", **CLAIM)
    seen = []

    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            done = await store.complete(record, result_status=200, result_body={}, worker_id="w", attempt=1, tx=tx)
            assert done is not None
            seen.append(await tx.conn.scalar(sa.select(requests.c.status).where(requests.c.id == done.id)))
            await tx.conn.execute(webhooks.insert().values(request_id=done.id, url="http://x", body="{}", state="pending", attempts=0, next_attempt_at=0, created_at=0))
            raise RuntimeError("settlement failed")
    assert seen == [Status.COMPLETED.value]
    assert (await store.get(record.id)).status is Status.IN_PROGRESS
    async with db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(webhooks)) == 0
    assert await store.complete(record, result_status=200, result_body={}, worker_id="w", attempt=1) is not None


async def test_cancel_flag_only_touches_running_requests(db: Database, new_request: Callable[..., dict]) -> None:
    """request_cancel flags IN_PROGRESS requests and leaves queued and completed ones alone."""
    store = RequestStore(db)
    queued = await store.insert(**new_request())
    assert await store.request_cancel(queued.id) is None
    assert not (await store.get(queued.id)).cancel_requested
    (running,) = await store.claim(worker_id="w", **CLAIM)
    assert (await store.request_cancel(running.id)).cancel_requested
    assert await store.cancel_requested("w") == {running.id}
    await store.complete(running, result_status=200, result_body={}, worker_id="w", attempt=1)
    assert await store.request_cancel(running.id) is None


async def test_a_second_insert_with_the_same_idempotency_key_stores_nothing(db: Database, new_request: Callable[..., dict]) -> None:
    """The unique index turns a racing duplicate into DuplicateIdempotencyKey, and its
    transaction (admission, reservation) is rolled back with it."""
    from openfal.store.requests import DuplicateIdempotencyKey

    store = RequestStore(db)
    first = await store.insert(**new_request(idempotency_key="k1:x", idempotency_hash="h"))
    ran = []

    with pytest.raises(DuplicateIdempotencyKey):
        async with store.transaction() as tx:
            ran.append(await store.insert(tx=tx, **new_request(idempotency_key="k1:x", idempotency_hash="h")))
    assert ran == []
    assert (await store.find_idempotent("k1:x")).id == first.id
    assert await store.queue_length("builtin") == 1


async def test_default_key_concurrency_lets_other_keys_pass_a_burst(db: Database, new_request: Callable[..., dict]) -> None:
    """With a default of one running request per key, a key's burst of three queued
    first does not hold back another key's request; a key's own max_concurrent still
    wins over the default, and keyless requests are not limited."""
    from openfal.store.api_keys import KeyStore

    keys = KeyStore(db)
    burst, _ = await keys.create("burst")
    other, _ = await keys.create("other")
    wide, _ = await keys.create("wide")
    await keys.set_limits(wide.id, max_concurrent=2)
    store = RequestStore(db, default_key_concurrency=1)
    first = [await store.insert(**new_request(key_id=burst.id)) for _ in range(3)]
    late = await store.insert(**new_request(key_id=other.id))
    wides = [await store.insert(**new_request(key_id=wide.id)) for _ in range(3)]
    keyless = [await store.insert(**new_request()) for _ in range(2)]
    claimed = [r.id for _ in range(8) for r in await store.claim(worker_id="w", **CLAIM)]
    # round-robin across keys: the keyless requests take their turn between wide's two
    assert claimed == [first[0].id, late.id, wides[0].id, keyless[0].id, wides[1].id, keyless[1].id]


async def test_heartbeat_renews_only_the_lease_holders_requests(db: Database, new_request: Callable[..., dict]) -> None:
    """A heartbeat from the worker holding the lease takes it out of expired_leases; one from another worker does not."""
    store = RequestStore(db)
    await store.insert(**new_request())
    (record,) = await store.claim(worker_id="w1", **CLAIM)
    await expire_lease(db, record.id)
    await store.heartbeat("w2", [record.id], 30)
    assert [r.id for r in await store.expired_leases(time.time())] == [record.id]
    await store.heartbeat("w1", [record.id], 30)
    assert await store.expired_leases(time.time()) == []
    assert (await store.get(record.id)).lease_expires_at > time.time() + 20


async def test_queue_position_counts_same_backend_requests_ahead(db: Database, new_request: Callable[..., dict]) -> None:
    """Position counts queued requests of the same backend claimed before this one: not running
    ones, not other backends', not lower priority ones."""
    store = RequestStore(db)
    await store.insert(**new_request())
    await store.claim(worker_id="w", **CLAIM)  # running now: no longer ahead of anyone
    await store.insert(**new_request())
    await store.insert(**new_request(backend="local"))
    await store.insert(**new_request(priority=1))
    mine = await store.insert(**new_request())
    later_low = await store.insert(**new_request(priority=1))
    assert await store.queue_position(mine) == 1
    assert await store.queue_position(later_low) == 3


async def test_a_dead_workers_request_is_retried_then_failed(db: Database, new_request: Callable[..., dict], tmp_path: Path) -> None:
    """An expired lease puts the request back in the queue; past max_attempts it ends 503 runner_disconnected."""
    store = RequestStore(db)
    reaper = make_reaper(db, store, tmp_path, max_attempts=2)
    record = await store.insert(**new_request())
    for attempt in (1, 2):
        (claimed,) = await store.claim(worker_id=f"w{attempt}", **CLAIM)
        assert claimed.attempts == attempt
        await expire_lease(db, record.id)
        await reaper.sweep()
        if attempt == 1:
            assert (await store.get(record.id)).status is Status.IN_QUEUE
    final = await store.get(record.id)
    assert final.status is Status.COMPLETED
    assert final.result_status == RunnerLost.status_code and final.error_type == "runner_disconnected"


async def test_a_no_retry_requests_dead_worker_fails_it_at_once(db: Database, new_request: Callable[..., dict], tmp_path: Path) -> None:
    """With X-Fal-No-Retry the first expired lease ends the request 503, whatever max_attempts allows."""
    store = RequestStore(db)
    reaper = make_reaper(db, store, tmp_path, max_attempts=3)
    record = await store.insert(**new_request(no_retry=True))
    await store.claim(worker_id="w", **CLAIM)
    await expire_lease(db, record.id)
    await reaper.sweep()
    final = await store.get(record.id)
    assert (final.status, final.attempts, final.error_type) == (Status.COMPLETED, 1, "runner_disconnected")
    assert "X-Fal-No-Retry" in final.error


@pytest.mark.parametrize("max_attempts", [1, 2], ids=["fail", "requeue"])
async def test_reaper_spares_a_lease_renewed_after_it_looked(
    db: Database, new_request: Callable[..., dict], tmp_path: Path, max_attempts: int
) -> None:
    """A heartbeat landing between the reaper's scan and its move wins: the request keeps running."""
    store = RequestStore(db)
    reaper = make_reaper(db, store, tmp_path, max_attempts=max_attempts)
    await store.insert(**new_request())
    (record,) = await store.claim(worker_id="w", **CLAIM)
    await expire_lease(db, record.id)
    scan = store.expired_leases

    async def scan_then_heartbeat(now: float, limit: int = 100) -> list:
        found = await scan(now, limit)
        await store.heartbeat("w", [record.id], 30)  # the stalled worker comes back
        return found

    store.expired_leases = scan_then_heartbeat  # type: ignore[method-assign]
    await reaper.sweep()
    after = await store.get(record.id)
    assert (after.status, after.worker_id, after.attempts) == (Status.IN_PROGRESS, "w", 1)


async def test_expired_lease_of_a_cancelled_request_ends_it_cancelled(db: Database, new_request: Callable[..., dict], tmp_path: Path) -> None:
    """A request whose client cancelled and whose worker then died ends 499 client_cancelled, not retried."""
    store = RequestStore(db)
    reaper = make_reaper(db, store, tmp_path, max_attempts=3)
    record = await store.insert(**new_request())
    await store.claim(worker_id="w", **CLAIM)
    await store.request_cancel(record.id)
    await expire_lease(db, record.id)
    await reaper.sweep()
    final = await store.get(record.id)
    assert (final.status, final.result_status, final.error_type) == (Status.COMPLETED, 499, "client_cancelled")


async def test_missed_start_deadline_completes_with_504(db: Database, new_request: Callable[..., dict], tmp_path: Path) -> None:
    """The reaper ends queued requests past their deadline with request_timeout and the user timeout header."""
    store = RequestStore(db)
    reaper = make_reaper(db, store, tmp_path)
    record = await store.insert(**new_request(start_deadline=time.time() - 1))
    waiting = await store.insert(**new_request(start_deadline=time.time() + 60))
    await reaper.sweep()
    final = await store.get(record.id)
    assert (final.status, final.result_status, final.error_type) == (Status.COMPLETED, 504, "request_timeout")
    assert final.result_body["error_type"] == "request_timeout" and final.result_body["detail"]
    assert final.result_headers["X-Fal-Request-Timeout-Type"] == "user"
    assert (await store.get(waiting.id)).status is Status.IN_QUEUE


async def test_logs_after_returns_only_newer_lines(db: Database, new_request: Callable[..., dict]) -> None:
    """logs(after=id) returns the lines written since that id, in order, and only this request's."""
    store = RequestStore(db)
    record = await store.insert(**new_request())
    other = await store.insert(**new_request())
    await store.record_events(record.id, logs=[LogEntry(timestamp=1, message="a"), LogEntry(timestamp=2, message="b")])
    first = await store.logs(record.id)
    assert [e.message for _, e in first] == ["a", "b"]
    await store.record_events(other.id, logs=[LogEntry(timestamp=3, message="other")])
    await store.record_events(record.id, logs=[LogEntry(timestamp=4, message="c", level="ERROR")])
    newer = await store.logs(record.id, after=first[-1][0])
    assert [(e.message, e.level) for _, e in newer] == [("c", "ERROR")]
    assert await store.logs(record.id, after=newer[-1][0]) == []


async def test_purge_removes_old_completed_requests_and_their_logs(db: Database, new_request: Callable[..., dict]) -> None:
    """Retention drops completed requests older than the cutoff with their logs; queued, running
    and younger ones stay; X-Fal-Store-IO: 0 ones go at the shorter cutoff."""
    store = RequestStore(db)
    old, young, unstored, running, queued = [
        await store.insert(**new_request(store_io=name != "unstored")) for name in ("old", "young", "unstored", "running", "queued")
    ]
    for record in (old, young, unstored):
        await store.record_events(record.id, logs=[LogEntry(timestamp=1, message=record.id)])
    for record in (old, young, unstored, running):
        (claimed,) = await store.claim(worker_id="w", **CLAIM)
        assert claimed.id == record.id
        if record is not running:
            await store.complete(claimed, result_status=200, result_body={}, worker_id="w", attempt=1)
    async with db.write() as conn:
        for record, age in ((old, 100), (young, 10), (unstored, 50)):
            await conn.execute(sa.update(requests).where(requests.c.id == record.id).values(completed_at=time.time() - age))
    assert await store.purge_completed_before(time.time() - 60, unstored_cutoff=time.time() - 30) == 2
    assert [await store.get(r.id) for r in (old, unstored)] == [None, None]
    assert {(await store.get(r.id)).status for r in (young, running, queued)} == {Status.COMPLETED, Status.IN_PROGRESS, Status.IN_QUEUE}
    async with db.read() as conn:
        assert list(await conn.scalars(sa.select(request_logs.c.request_id))) == [young.id]


async def test_queue_position_with_100k_queued_is_exact_from_one_shared_snapshot(db: Database, new_request: Callable[..., dict]) -> None:
    """With 100,000 queued requests positions are exact, and every poll of the deep queue
    is answered from one snapshot of it (benchmarks/queue_position.py measures it)."""
    store = RequestStore(db)
    now = time.time()
    rows = [
        {**new_request(), "status": "IN_QUEUE", "attempts": 0, "cancel_requested": False, "backend_state": {}, "version": 0, "store_io": True, "created_at": now}
        for _ in range(100_000)
    ]
    async with db.write() as conn:
        for start in range(0, len(rows), 10_000):
            await conn.execute(requests.insert(), rows[start : start + 10_000])
    last = await store.get(rows[-1]["id"])
    assert await store.queue_position(last) == 99_999
    snapshot = store.views.snapshot("builtin")
    assert snapshot is not None and snapshot.size == 100_000
    middle = await store.get(rows[50_000]["id"])
    assert await store.queue_position(middle) == 50_000
    assert store.views.snapshot("builtin") is snapshot
