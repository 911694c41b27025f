"""Fair share between API keys, on SQLite and PostgreSQL: a free slot goes to the key
that has waited longest for its turn (priority still first), queue positions follow
that order, and a key may be limited in how many requests it has waiting. Each test runs
twice: claims asking the database for each key's head, and claims choosing keys from the
process's queue snapshot (a live change feed, store/snapshot_claims.py)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from openfal.store.api_keys import KeyStore
from openfal.store.db import Database
from openfal.store.requests import KeyQueueFull, RequestStore
from openfal.store.views import StatusCache

CLAIM = {"backends": ["builtin"], "lease_seconds": 30}


@pytest.fixture(autouse=True, params=["query", "snapshot"])
def claims_choose_by(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``snapshot``: every store's change feed is live (no listener is started: each test
    writes through its one store, whose own commits reach its views at commit), so its
    claims choose keys from its queue snapshot."""
    if request.param == "snapshot":
        made = StatusCache.__init__

        def live(self: StatusCache) -> None:
            made(self)
            self.live = True

        monkeypatch.setattr(StatusCache, "__init__", live)
    return str(request.param)


async def claim_all(store: RequestStore) -> list[str]:
    order = []
    while claimed := await store.claim(worker_id="w", **CLAIM):
        order += [r.id for r in claimed]
    return order


async def test_one_keys_burst_does_not_hold_back_another_keys_single_request(db: Database, new_request: Callable[..., dict]) -> None:
    """Key a queues five, then key b one: b's request is claimed second, not sixth, and
    a's go on in their own order around it."""
    store = RequestStore(db)
    burst = [await store.insert(**new_request(key_id="a")) for _ in range(5)]
    single = await store.insert(**new_request(key_id="b"))
    assert await claim_all(store) == [burst[0].id, single.id, *[r.id for r in burst[1:]]]


async def test_keys_take_turns_round_robin(db: Database, new_request: Callable[..., dict]) -> None:
    """Three keys with three queued each are served a, b, c, a, b, c, ..."""
    store = RequestStore(db)
    queued = {key: [] for key in "abc"}
    for key in "abc":
        for _ in range(3):
            queued[key].append((await store.insert(**new_request(key_id=key))).id)
    expected = [queued[key][i] for i in range(3) for key in "abc"]
    assert await claim_all(store) == expected


async def test_a_key_that_just_had_its_turn_waits_for_the_others(db: Database, new_request: Callable[..., dict]) -> None:
    """b was served a moment ago; a request of a that arrived before b's next one goes first."""
    store = RequestStore(db)
    await store.insert(**new_request(key_id="b"))
    await claim_all(store)  # b's turn
    early_a = await store.insert(**new_request(key_id="a"))
    next_b = await store.insert(**new_request(key_id="b"))
    assert await claim_all(store) == [early_a.id, next_b.id]


async def test_priority_comes_before_turns(db: Database, new_request: Callable[..., dict]) -> None:
    """A low-priority request waits behind every normal one, whatever the keys' turns."""
    store = RequestStore(db)
    low = await store.insert(**new_request(key_id="a", priority=1))
    normal = [await store.insert(**new_request(key_id="b")) for _ in range(3)]
    assert await claim_all(store) == [*[r.id for r in normal], low.id]


async def test_requests_without_a_key_take_turns_as_one_key(db: Database, new_request: Callable[..., dict]) -> None:
    """Keyless requests (auth off) share one turn: they interleave with a keyed burst."""
    store = RequestStore(db)
    keyed = [await store.insert(**new_request(key_id="a")) for _ in range(2)]
    keyless = [await store.insert(**new_request()) for _ in range(2)]
    assert await claim_all(store) == [keyed[0].id, keyless[0].id, keyed[1].id, keyless[1].id]


async def test_queue_positions_are_the_order_requests_are_claimed_in(db: Database, new_request: Callable[..., dict]) -> None:
    """For a mixed queue (three keys, two priorities, keys with past turns) each queued
    request's position is the number claimed before it."""
    store = RequestStore(db)
    rng = random.Random(12)
    await store.insert(**new_request(key_id="c"))
    await claim_all(store)  # c had a turn just now
    records = [await store.insert(**new_request(key_id=rng.choice("abc"), priority=rng.choice([0, 0, 1]))) for _ in range(30)]
    positions = {r.id: await store.queue_position(r) for r in records}
    order = await claim_all(store)
    assert [positions[request_id] for request_id in order] == list(range(len(records)))


@pytest.fixture
async def key_id(db: Database) -> str:
    key, _ = await KeyStore(db).create("limited")
    return key.id


async def test_max_queued_refuses_a_submit_past_the_limit_and_stores_nothing(
    db: Database, new_request: Callable[..., dict], key_id: str
) -> None:
    """With max_queued=2 a third waiting request is refused; once one is claimed there is room again."""
    store = RequestStore(db)
    for _ in range(2):
        await store.insert(**new_request(key_id=key_id), max_queued=2)
    with pytest.raises(KeyQueueFull):
        await store.insert(**new_request(key_id=key_id), max_queued=2)
    assert await store.queue_length("builtin") == 2
    await store.claim(worker_id="w", **CLAIM)
    await store.insert(**new_request(key_id=key_id), max_queued=2)
    assert await store.queue_length("builtin") == 2


async def test_max_queued_counts_only_that_keys_waiting_requests(db: Database, new_request: Callable[..., dict], key_id: str) -> None:
    """Other keys' queued requests do not count against a key's limit."""
    store = RequestStore(db)
    for _ in range(3):
        await store.insert(**new_request(key_id="someone-else"))
    await store.insert(**new_request(key_id=key_id), max_queued=1)
    with pytest.raises(KeyQueueFull):
        await store.insert(**new_request(key_id=key_id), max_queued=1)


async def test_several_runs_claimed_at_once_are_taken_as_claims_in_a_row_would_take_them(db: Database, new_request: Callable[..., dict]) -> None:
    """A worker with four free slots claims once: the heads of a, b and c, then a's next
    (a has the most waiting); in claims one at a time those four would go first too."""
    store = RequestStore(db)
    queued = {key: [(await store.insert(**new_request(key_id=key))).id for _ in range(n)] for key, n in {"a": 3, "b": 1, "c": 1}.items()}
    taken = await store.claim(worker_id="w", runs=4, **CLAIM)
    assert sorted(r.id for r in taken) == sorted([*queued["a"][:2], queued["b"][0], queued["c"][0]])
    assert [r.id for r in await store.claim(worker_id="w", runs=4, **CLAIM)] == queued["a"][2:]


async def test_several_runs_claimed_at_once_leave_a_limited_key_at_its_limit(db: Database, new_request: Callable[..., dict]) -> None:
    store = RequestStore(db)
    key, _ = await KeyStore(db).create("one at a time", limits={"max_concurrent": 1})
    mine = [(await store.insert(**new_request(key_id=key.id))).id for _ in range(3)]
    other = (await store.insert(**new_request(key_id="free"))).id
    taken = await store.claim(worker_id="w", runs=4, **CLAIM)
    assert sorted(r.id for r in taken) == sorted([mine[0], other])
