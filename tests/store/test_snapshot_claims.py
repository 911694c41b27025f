"""Claims that choose keys from the process's queue snapshot (store/snapshot_claims.py),
on SQLite and PostgreSQL: with a live change feed no claim probes each waiting key's
head, a snapshot behind another process's claim costs only the key that yields
nothing, and keys at their limit are passed over however many wait ahead of the rest.
(No listener runs: each store's feed is set live by hand, and its own commits reach its
views at commit; a second store's claims are what a late notice from another process
would look like.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from openfal.store.api_keys import KeyStore
from openfal.store.db import Database
from openfal.store.requests import LeftForHint, RequestStore

CLAIM = {"backends": ["builtin"], "lease_seconds": 30}


def live_store(db: Database) -> RequestStore:
    store = RequestStore(db)
    store.views.set_live(True)
    return store


async def held_keys(db: Database, new_request: Callable[..., dict], count: int) -> RequestStore:
    """A live store with ``count`` keys, each running its one allowed request and with
    one more waiting (waiting longer than any request queued after)."""
    store = live_store(db)
    for i in range(count):
        key, _ = await KeyStore(db).create(f"held{i}", limits={"max_concurrent": 1})
        await store.insert(**new_request(key_id=key.id))
        await store.claim(worker_id="w", **CLAIM)
        await store.insert(**new_request(key_id=key.id))
    return store


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL each statement run meanwhile sent to the database."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    for engine in db.engines:
        sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        for engine in db.engines:
            sa.event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_a_claim_with_a_current_snapshot_probes_no_keys_head(db: Database, new_request: Callable[..., dict]) -> None:
    store = live_store(db)
    for i in range(30):
        await store.insert(**new_request(key_id=f"k{i % 10}"))
    await store.claim(worker_id="w", **CLAIM)  # reads the snapshot
    with statements(db) as sent:
        taken = await store.claim(worker_id="w", **CLAIM)
    assert taken and not [s for s in sent if "queued_keys" in s]  # the candidates query's key scan


async def test_a_key_whose_requests_another_process_took_yields_to_the_next_and_leaves_the_snapshot(db: Database, new_request: Callable[..., dict]) -> None:
    store, other = live_store(db), RequestStore(db)
    gone = await store.insert(**new_request(key_id="a"))
    waiting = await store.insert(**new_request(key_id="b"))
    await store.claim(worker_id="w", backends=["elsewhere"], lease_seconds=30)  # nothing there: no snapshot of builtin yet
    assert store.views.current_snapshot("builtin") is None
    await store.queue_position(waiting)  # the snapshot holds a's request
    assert [r.id for r in await other.claim(worker_id="x", **CLAIM)] == [gone.id]  # unseen by store
    assert [r.id for r in await store.claim(worker_id="w", **CLAIM)] == [waiting.id]
    snap = store.views.current_snapshot("builtin")
    assert snap is not None and snap.size == 0  # a's head, found gone, is not asked for again


async def test_keys_at_their_limit_are_passed_over_however_many_wait_first(db: Database, new_request: Callable[..., dict]) -> None:
    """Six keys, each running its one allowed request, waited longer than the free
    key: more than a claim's spare candidates, so the snapshot is asked again without them."""
    store = await held_keys(db, new_request, 6)
    free = await store.insert(**new_request(key_id="free"))
    assert [r.id for r in await store.claim(worker_id="w", **CLAIM)] == [free.id]
    assert await store.claim(worker_id="w", **CLAIM) == []


async def test_keys_at_their_limit_as_the_last_claim_found_them_are_passed_over_in_one_statement(
    db: Database, new_request: Callable[..., dict]
) -> None:
    store = await held_keys(db, new_request, 6)
    free = [await store.insert(**new_request(key_id="free")) for _ in range(2)]
    assert [r.id for r in await store.claim(worker_id="w", **CLAIM)] == [free[0].id]
    with statements(db) as sent:
        assert [r.id for r in await store.claim(worker_id="w", **CLAIM)] == [free[1].id]
    assert len([s for s in sent if "saturated" in s]) == 1 and not [s for s in sent if "queued_keys" in s]


async def test_a_claim_that_finds_every_waiting_key_at_its_limit_sends_no_candidates_query(db: Database, new_request: Callable[..., dict]) -> None:
    """A worker wakes at every submit; when all that waits is held by its keys' limits,
    its claim is the one limits statement, not a probe of each waiting key's head."""
    store = await held_keys(db, new_request, 6)
    assert await store.claim(worker_id="w", **CLAIM) == []
    with statements(db) as sent:
        assert await store.claim(worker_id="w", **CLAIM) == []
    assert len([s for s in sent if "saturated" in s]) == 1 and not [s for s in sent if "queued_keys" in s]


async def test_a_request_hinted_to_a_runner_another_worker_advertises_is_left_to_it(db: Database, new_request: Callable[..., dict]) -> None:
    """Within its grace a request hinted elsewhere is not taken from the snapshot either:
    the claim is undone (CI once saw the plain worker take a hinted request this way)."""
    store = live_store(db)
    hinted = await store.insert(**new_request(key_id="a", runner_hint="lora-a"))
    await store.claim(worker_id="w", backends=["elsewhere"], lease_seconds=30)
    await store.queue_position(hinted)  # the snapshot holds it
    with pytest.raises(LeftForHint):
        await store.claim(worker_id="plain", leave={"lora-a"}, **CLAIM)
    assert (await store.get(hinted.id)).status == "IN_QUEUE"  # type: ignore[union-attr]
