"""What status polls read (RequestStore.view and queue positions) is never older than
this process's own commits, and other processes' commits reach it through the change
feed (PostgreSQL LISTEN/NOTIFY, SQLite's data_version); without a feed every read goes
to the database. Two RequestStores on two Database objects stand for two processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from openfal.models import Status
from openfal.notify import Notifier
from openfal.store.db import Database
from openfal.store.listener import change_feed
from openfal.store.requests import RequestStore
from openfal.store.views import StatusCache

CLAIM = {"backends": ["builtin"], "lease_seconds": 30}


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not await condition():  # type: ignore[misc]
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


@pytest.fixture
async def other(db_url: str, db: Database) -> AsyncIterator[RequestStore]:
    """A second process's store, its change feed running."""
    database = Database(db_url)
    notifier = Notifier()
    store = RequestStore(database, notifier=notifier)
    feed = change_feed(database, notifier, store.views, database_url=db_url, interval=0.05)
    feed.start()
    await until(lambda: asyncio.sleep(0, store.views.live))
    yield store
    await feed.close()
    await database.close()


async def test_a_processs_own_commit_is_seen_at_once_while_its_view_is_cached(db: Database, new_request: Callable[..., dict]) -> None:
    """With a live feed the queued record is served from memory; the claim this store
    commits replaces it before claim() returns."""
    store = RequestStore(db)
    store.views.set_live(True)
    record = await store.insert(**new_request())
    assert (await store.view(record.id)).status is Status.IN_QUEUE
    assert store.views.record(record.id) is not None  # cached now
    await store.claim(worker_id="w", **CLAIM)
    assert (await store.view(record.id)).status is Status.IN_PROGRESS
    await store.record_events(record.id, progress=(1, 2))
    assert (await store.view(record.id)).progress_step == 1


async def test_a_position_is_recomputed_after_this_processs_own_claim(db: Database, new_request: Callable[..., dict]) -> None:
    """The queue snapshot that answered position 1 is not used after the claim ahead."""
    store = RequestStore(db)
    store.views.set_live(True)
    await store.insert(**new_request())
    second = await store.insert(**new_request())
    assert await store.queue_position(second) == 1
    await store.claim(worker_id="w", **CLAIM)
    assert await store.queue_position(second) == 0


async def test_another_processs_commit_reaches_the_view_through_the_feed(
    db: Database, other: RequestStore, new_request: Callable[..., dict]
) -> None:
    """The other process cached the queued request; this one claims and completes it;
    the other's view follows within the feed's round trip."""
    here = RequestStore(db)
    record = await here.insert(**new_request())

    async def cached_queued() -> bool:
        # a read that raced with the feed's notice of the insert itself is not kept
        return (await other.view(record.id)).status is Status.IN_QUEUE and other.views.record(record.id) is not None

    await until(cached_queued)
    (claimed,) = await here.claim(worker_id="w", **CLAIM)

    async def running() -> bool:
        return (await other.view(record.id)).status is Status.IN_PROGRESS

    await until(running)
    await here.complete(claimed, result_status=200, result_body={"ok": True}, worker_id="w", attempt=1)

    async def completed() -> bool:
        return (await other.view(record.id)).status is Status.COMPLETED

    await until(completed)


async def test_another_processs_claim_moves_positions_through_the_feed(
    db: Database, other: RequestStore, new_request: Callable[..., dict]
) -> None:
    """A position the other process answered from its snapshot moves once this one claims."""
    here = RequestStore(db)
    await here.insert(**new_request())
    second = await here.insert(**new_request())
    assert await other.queue_position(second) == 1
    await here.claim(worker_id="w", **CLAIM)

    async def moved() -> bool:
        return await other.queue_position(second) == 0

    await until(moved)


async def test_without_a_feed_pending_records_are_always_read(db: Database, new_request: Callable[..., dict]) -> None:
    """A store whose feed is not live keeps no pending record: another process's change
    shows on the very next read."""
    here, elsewhere = RequestStore(db), RequestStore(db)
    record = await here.insert(**new_request())
    assert (await elsewhere.view(record.id)).status is Status.IN_QUEUE
    assert elsewhere.views.record(record.id) is None
    await here.claim(worker_id="w", **CLAIM)
    assert (await elsewhere.view(record.id)).status is Status.IN_PROGRESS


async def test_losing_the_feed_drops_what_was_kept(db: Database, new_request: Callable[..., dict]) -> None:
    """While the feed is down (changes may be missed) cached pending records are not served."""
    store = RequestStore(db)
    store.views.set_live(True)
    record = await store.insert(**new_request())
    await store.view(record.id)
    store.views.set_live(False)
    assert store.views.record(record.id) is None


async def test_a_completed_record_is_kept_without_a_feed(db: Database, new_request: Callable[..., dict]) -> None:
    """COMPLETED never changes again: it is served from memory even with no feed."""
    store = RequestStore(db)
    await store.insert(**new_request())
    (claimed,) = await store.claim(worker_id="w", **CLAIM)
    await store.complete(claimed, result_status=200, result_body={}, worker_id="w", attempt=1)
    assert store.views.record(claimed.id).status is Status.COMPLETED


def test_a_read_that_raced_a_change_is_not_kept(new_request: Callable[..., dict]) -> None:
    """A database read begun before a change (its answer may predate it) is discarded."""
    from openfal.models import RequestRecord

    views = StatusCache()
    views.set_live(True)
    values = new_request()
    record = RequestRecord(**{k: values[k] for k in ("id", "app", "endpoint_id", "backend", "key_id", "priority", "input", "base_url")},
                           seq=1, status=Status.IN_QUEUE, created_at=0.0)
    token = views.begin_fill(record.id)
    views.changed(record.id)  # a commit lands while the read is in flight
    views.fill(record.id, token, record)
    assert views.record(record.id) is None
    token = views.begin_fill(record.id)
    views.everything_changed()  # or the feed reconnects
    views.fill(record.id, token, record)
    assert views.record(record.id) is None


async def test_own_commits_move_positions_without_reading_the_queue_again(db: Database, new_request: Callable[..., dict]) -> None:
    """Inserts, claims and cancels of this process are applied to the queue snapshot in
    place: positions stay exactly the claim order, from the one snapshot."""
    import random

    from openfal.errors import RunCancelled

    store = RequestStore(db)
    store.views.set_live(True)
    rng = random.Random(7)
    queued = [await store.insert(**new_request(key_id=rng.choice("ab"))) for _ in range(6)]
    await store.queue_position(queued[0])
    snapshot = store.views.snapshot("builtin")
    await store.claim(worker_id="w", **CLAIM)
    queued += [await store.insert(**new_request(key_id=rng.choice("abc"), priority=rng.choice([0, 1]))) for _ in range(8)]
    gone = queued[3]
    await store.complete(gone, result_status=499, result_body={}, error=RunCancelled().message, expect=Status.IN_QUEUE)
    waiting = [r for r in queued[1:] if r is not gone]
    positions = {r.id: await store.queue_position(r) for r in waiting}
    assert store.views.snapshot("builtin") is snapshot
    order = []
    while claimed := await store.claim(worker_id="w", **CLAIM):
        order += [r.id for r in claimed]
    assert [positions[request_id] for request_id in order] == list(range(len(waiting)))


async def test_concurrent_polls_share_one_read_and_keep_its_answer(db: Database, new_request: Callable[..., dict]) -> None:
    """Many polls of a record not yet in memory (another API process's request) read it
    once between them, and it is kept: a stream of polls cannot keep it out."""
    store = RequestStore(db)
    store.views.set_live(True)
    record = await RequestStore(db).insert(**new_request())
    reads = 0
    get = store.get

    async def counted(request_id: str):  # noqa: ANN202 - wraps the real read
        nonlocal reads
        reads += 1
        return await get(request_id)

    store.get = counted  # type: ignore[method-assign]
    views = await asyncio.gather(*(store.view(record.id) for _ in range(32)))
    assert {v.id for v in views} == {record.id} and reads == 1
    assert store.views.record(record.id) is not None


def test_a_queue_read_that_raced_changes_lands_with_them_applied() -> None:
    """Changes committed while a queue snapshot is read are applied to what it read
    (idempotently: it may hold some already), so it lands current; a deep queue under
    load is not read again at every poll."""
    from openfal.store.views import QueueSnapshot

    views = StatusCache()
    views.set_live(True)
    epoch, generation = views.epoch("builtin"), views.generation
    token = views.begin_read("builtin")
    views.queue_changed("builtin", lambda snap: snap.add(0, "", 2, 0.0))  # queued during the read
    views.queue_changed("builtin", lambda snap: snap.remove(0, "", 1))  # claimed during the read
    read = QueueSnapshot([(1, 0, "", 0.0), (2, 0, "", 0.0)], {}, epoch=epoch, generation=generation)  # saw the add, not the claim
    views.keep_snapshot("builtin", read, token)
    assert views.snapshot("builtin") is read
    assert read.size == 1 and read.position(0, "", 2) == 0


def test_a_queue_read_that_raced_an_unknown_change_is_read_again() -> None:
    from openfal.store.views import QueueSnapshot

    views = StatusCache()
    views.set_live(True)
    epoch, generation = views.epoch("builtin"), views.generation
    token = views.begin_read("builtin")
    views.queue_changed("builtin")  # a change whose delta is not known
    views.keep_snapshot("builtin", QueueSnapshot([], {}, epoch=epoch, generation=generation), token)
    assert views.snapshot("builtin") is None


def test_positions_after_submits_in_place_match_a_snapshot_read_afresh() -> None:
    """A submit behind its key's head keeps the rotation's ranking (no new ranking of
    every waiting key per submit); positions must still equal a fresh read's."""
    import random

    from openfal.store.views import QueueSnapshot

    rng = random.Random(7)
    rows = [(seq, rng.choice([0, 0, 1]), f"k{rng.randrange(6)}", float(seq)) for seq in range(1, 40)]
    turns = {f"k{i}": float(rng.randrange(50)) for i in range(0, 6, 2)}
    live = QueueSnapshot(rows, turns, epoch=0, generation=0)
    for seq in range(40, 90):
        row = (seq, rng.choice([0, 1, 1, 2]), f"k{rng.randrange(8)}", float(seq))
        live.position(row[1], row[2], row[0])  # ranked before each add, as polls do
        live.add(row[1], row[2], row[0], row[3])
        rows.append(row)
        fresh = QueueSnapshot(rows, turns, epoch=0, generation=0)
        assert [live.position(p, k, s) for s, p, k, _ in rows] == [fresh.position(p, k, s) for s, p, k, _ in rows]
