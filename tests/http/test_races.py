"""HTTP behaviours whose correctness depends on how concurrent writers meet, run on a
SQLite file and on the real PostgreSQL server (where claims, inserts and cancels truly
overlap): idempotent submits, replays and charges, cancels racing claims, and a key's
``max_concurrent`` with two worker processes claiming at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from openfal.backends.builtin import BuiltinBackend
from openfal.models import Status
from openfal.runtime import Runtime
from openfal.store import ledger
from openfal.store.requests import DuplicateIdempotencyKey
from openfal.store.schema import ledger as ledger_table
from openfal.store.schema import requests
from tests.support import App, make_settings, running_app, wait_status

PRICED = {"openfal/utils/*": {"per_request": 0.01}}
CENT = 10_000  # micro-dollars
ECHO = "/openfal/utils/echo"
SLEEP = "/openfal/utils/sleep"


@pytest.fixture
async def app(tmp_path: Path, database_url: str | None) -> AsyncIterator[App]:
    settings = make_settings(tmp_path, prices=PRICED, database_url=database_url, concurrency={"builtin": 4})
    async with running_app(settings) as app:
        yield app



async def entries(app: App, key_id: str, kind: str) -> int:
    async with app.runtime.db.read() as conn:
        query = sa.select(sa.func.count()).where(ledger_table.c.key_id == key_id, ledger_table.c.kind == kind)
        return int((await conn.execute(query)).scalar() or 0)


async def test_racing_submits_with_one_idempotency_key_make_one_request_and_one_charge(app: App) -> None:
    """Ten submits all look the key up before any inserts (a barrier after the look-up
    makes sure), so nine reach the unique index, lose, and are answered with the first."""
    key_id, auth = await app.credited_key(1.00)
    store = app.runtime.requests
    lookups, duplicates = 0, 0
    barrier = asyncio.Barrier(10)
    find, insert = store.find_idempotent, store.insert

    async def find_then_wait(idempotency_key: str) -> Any:
        nonlocal lookups
        found = await find(idempotency_key)
        lookups += 1
        if lookups <= 10:
            await barrier.wait()
        return found

    async def insert_counting(**values: Any) -> Any:
        nonlocal duplicates
        try:
            return await insert(**values)
        except DuplicateIdempotencyKey:
            duplicates += 1
            raise

    store.find_idempotent, store.insert = find_then_wait, insert_counting  # type: ignore[method-assign]
    headers = {**auth, "Idempotency-Key": "burst"}
    replies = await asyncio.gather(*(app.client.post(ECHO, json={"n": 3}, headers=headers) for _ in range(10)))

    assert {r.status_code for r in replies} == {200}
    assert len({r.json()["request_id"] for r in replies}) == 1
    assert duplicates == 9, "the unique-index path did not run"
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in replies) == 9
    assert len(await store.history(None)) == 1
    await wait_status(app.client, replies[0].json()["status_url"], auth)
    assert await entries(app, key_id, "reserve") == 1
    assert await ledger.balance(app.runtime.db, key_id) == 1_000_000 - CENT


async def test_a_replayed_submit_does_not_charge_again(app: App) -> None:
    key_id, auth = await app.credited_key(1.00)
    headers = {**auth, "Idempotency-Key": "order-7"}
    first = (await app.client.post(ECHO, json={}, headers=headers)).json()
    await wait_status(app.client, first["status_url"], auth)
    charged = await ledger.balance(app.runtime.db, key_id)
    assert charged == 1_000_000 - CENT

    for _ in range(3):
        again = await app.client.post(ECHO, json={}, headers=headers)
        assert again.json()["request_id"] == first["request_id"] and again.headers["idempotent-replayed"] == "true"

    assert await ledger.balance(app.runtime.db, key_id) == charged
    assert await ledger.ledger_sum(app.runtime.db, key_id) == charged
    assert (await entries(app, key_id, "reserve"), await entries(app, key_id, "charge")) == (1, 1)


async def test_cancels_racing_claims_end_every_request_once_and_refunded(app: App) -> None:
    """Twelve requests are cancelled while four worker slots claim them: each cancel is
    accepted, each request ends cancelled exactly once, whether it was still queued (it
    never started) or already claimed (it stops at its next step), and nothing is charged."""
    key_id, auth = await app.credited_key(1.00)
    bodies = [(await app.client.post(SLEEP, json={"seconds": 10, "steps": 200}, headers=auth)).json() for _ in range(12)]
    while not await of_key(app, key_id, Status.IN_PROGRESS):  # the claims have begun
        await asyncio.sleep(0.01)
    answers = await asyncio.gather(*(app.client.put(b["cancel_url"], headers=auth) for b in bodies))
    assert {a.status_code for a in answers} == {202}

    for body in bodies:
        done = await wait_status(app.client, body["status_url"], auth)
        assert done.status_code == 200
    records = [await app.runtime.requests.get(b["request_id"]) for b in bodies]
    cancelled = (Status.COMPLETED, 499, "client_cancelled")
    others = [(r.id, r.status, r.result_status, r.error_type, r.error, r.attempts) for r in records if r is None or (r.status, r.result_status, r.error_type) != cancelled]
    assert not others, f"ended otherwise than cancelled: {others}"
    started = [r for r in records if r is not None and r.started_at is not None]
    assert 1 <= len(started) < 12, "both a running and a queued request were cancelled"
    assert await entries(app, key_id, "release") == 12 and await entries(app, key_id, "charge") == 12
    assert await ledger.balance(app.runtime.db, key_id) == 1_000_000
    assert await ledger.ledger_sum(app.runtime.db, key_id) == 1_000_000


async def test_max_concurrent_holds_with_two_worker_processes_claiming(app: App, tmp_path: Path) -> None:
    """A second runtime on the same database (another worker process) claims alongside
    the app's worker; the key's running requests never exceed its limit of two, and do
    reach it."""
    key_id, auth = await app.credited_key(10.00, max_concurrent=2)
    other = Runtime(app.runtime.settings, backends={"builtin": BuiltinBackend()})
    await other.start(workers=True)
    try:
        bodies = [(await app.client.post(SLEEP, json={"seconds": 0.3, "steps": 3}, headers=auth)).json() for _ in range(10)]
        peak, workers = 0, set()
        while True:
            snapshot = await of_key(app, key_id, Status.IN_PROGRESS)  # one query: one consistent view
            peak = max(peak, len(snapshot))
            workers |= set(snapshot)
            if len(await of_key(app, key_id, Status.COMPLETED)) == len(bodies):
                break
            await asyncio.sleep(0.01)
    finally:
        await other.stop()
    assert peak == 2
    records = [await app.runtime.requests.get(b["request_id"]) for b in bodies]
    assert all(r is not None and r.status is Status.COMPLETED and r.error is None for r in records)
    assert len(workers) == 2, "only one worker process claimed"


async def of_key(app: App, key_id: str, status: Status) -> list[str]:
    """The worker ids of the key's requests in ``status``, read in one statement."""
    query = sa.select(requests.c.worker_id).where(requests.c.key_id == key_id, requests.c.status == status.value)
    async with app.runtime.db.read() as conn:
        return list((await conn.execute(query)).scalars())
