"""A write transaction tells what it changed once, after it commits: to this process's
waiters and views directly, to other processes through PostgreSQL NOTIFY (the same
notices, applied the same way). A rolled-back transaction tells nobody."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from openfal.notify import Notifier
from openfal.store import outbox
from openfal.store.changes import CHANNEL, Notice, Transactions, apply
from openfal.store.db import Database
from openfal.store.listener import change_feed
from openfal.store.requests import RequestStore
from openfal.store.views import QueueSnapshot, StatusCache

CLAIM = {"backends": ["builtin"], "lease_seconds": 30}


def test_a_notice_reads_back_from_its_payload_with_its_sender() -> None:
    notice = Notice("queue", "builtin", {"rm": [[3, 1, "k", 1.5]], "turn": 2.0})
    assert Notice.parse(notice.payload("me")) == ("me", notice)


def test_a_work_notice_wakes_a_worker_and_moves_the_queue_snapshot_in_place() -> None:
    views, notifier = StatusCache(), Notifier()
    views.set_live(True)
    views.keep_snapshot("builtin", QueueSnapshot([], {}, epoch=views.epoch("builtin"), generation=views.generation))
    apply(Notice("work", "builtin", {"add": [[7, 1, "", 0.0]]}), views, notifier)
    snap = views.snapshot("builtin")
    assert snap is not None and snap.size == 1 and snap.position(1, "", 7) == 0
    assert notifier._work.is_set()


def test_a_cancel_notice_runs_the_cancel_hook_of_the_running_job() -> None:
    notifier, cancelled = Notifier(), []
    notifier.on_cancel("r1", lambda: cancelled.append("r1"))
    apply(Notice("cancel", "r1"), StatusCache(), notifier)
    assert cancelled == ["r1"]


def test_a_webhook_notice_wakes_the_deliverer() -> None:
    notifier, woken = Notifier(), []
    notifier.on_webhooks(lambda: woken.append(True))
    apply(Notice("webhook", "r1"), StatusCache(), notifier)
    assert woken == [True]


async def test_waiters_are_woken_only_after_the_commit(db: Database, new_request: Callable[..., dict]) -> None:
    """Inside the caller's transaction nothing is told; at its commit, everything is."""
    notifier = Notifier()
    store = RequestStore(db, notifier=notifier)
    async with store.transaction() as tx:
        record = await store.insert(tx=tx, **new_request())
        woken = notifier.watch(record.id, queue="builtin")
        assert not notifier._work.is_set()
    assert notifier._work.is_set()
    (claimed,) = await store.claim(worker_id="w", **CLAIM)
    assert woken.is_set() and claimed.id == record.id


async def test_a_rolled_back_transaction_tells_nobody(db: Database, new_request: Callable[..., dict]) -> None:
    notifier, woken = Notifier(), []
    notifier.on_webhooks(lambda: woken.append(True))
    store = RequestStore(db, notifier=notifier)
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await store.insert(tx=tx, **new_request())
            await outbox.enqueue(tx, request_id="r", url="http://x", body="{}")
            raise RuntimeError("the rest of the submit failed")
    assert not notifier._work.is_set() and woken == []
    assert await store.queue_length("builtin") == 0


@pytest.fixture
async def elsewhere(db_url: str) -> AsyncIterator[tuple[RequestStore, Notifier]]:
    """Another process's store and notifier, its change feed live."""
    database = Database(db_url)
    notifier = Notifier()
    store = RequestStore(database, notifier=notifier)
    feed = change_feed(database, notifier, store.views, database_url=db_url, interval=0.05)
    feed.start()
    for _ in range(500):
        if store.views.live:
            break
        await asyncio.sleep(0.01)
    yield store, notifier
    await feed.close()
    await database.close()


async def test_another_process_is_woken_by_the_same_notices(
    db_url: str, db: Database, new_request: Callable[..., dict], elsewhere: tuple[RequestStore, Notifier]
) -> None:
    """PostgreSQL carries each notice; SQLite's data_version wakes every waiter."""
    _, notifier = elsewhere
    seen: list[Any] = []
    notifier.on_webhooks(lambda: seen.append("webhook"))
    here = RequestStore(db)
    record = await here.insert(**new_request())
    woken = notifier.watch(record.id)
    await notifier.wait_work(10.0)
    await here.claim(worker_id="w", **CLAIM)
    await asyncio.wait_for(woken.wait(), 10.0)
    if not db.is_sqlite:
        async with here.transaction() as tx:
            await outbox.enqueue(tx, request_id=record.id, url="http://x", body="{}")
        for _ in range(500):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen == ["webhook"]


@pytest.mark.postgres
async def test_a_transactions_notices_reach_listeners_all_and_in_order(pg_url: str) -> None:
    """Sent together at commit (one round trip), each notice is its own notification."""
    database = Database(pg_url)
    await database.migrate()
    views = StatusCache()
    received: list[str] = []
    listener = await asyncpg.connect(pg_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await listener.add_listener(CHANNEL, lambda *args: received.append(args[-1]))
        async with Transactions(database, views, Notifier()).begin() as tx:
            for request_id in ("a", "b", "c"):
                tx.notice("changed", request_id)
        for _ in range(500):
            if len(received) == 3:
                break
            await asyncio.sleep(0.01)
        assert [Notice.parse(payload) for payload in received] == [(views.origin, Notice("changed", v)) for v in "abc"]
    finally:
        await listener.close()
        await database.close()
