"""API keys, the webhook outbox and server secrets on both databases."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from openfal.store import secrets
from openfal.store.api_keys import KeyStore, hash_secret
from openfal.store.db import Database
from openfal.store.outbox import OutboxStore, enqueue
from openfal.store.requests import RequestStore
from openfal.store.schema import api_keys, server_secrets


async def test_keys_are_stored_hashed_and_verify_until_revoked(db: Database) -> None:
    """The secret never appears in the table; verify accepts it until revoke."""
    keys = KeyStore(db)
    key, secret = await keys.create("alice")
    async with db.read() as conn:
        stored = " ".join(str(v) for v in (await conn.execute(sa.select(api_keys))).one())
    assert secret.split(":")[1] not in stored and hash_secret(secret.split(":")[1]) in stored
    assert (await keys.verify(secret)).id == key.id
    assert await keys.verify(secret + "x") is None
    assert await keys.revoke(key.id) and not await keys.revoke(key.id)
    assert await keys.verify(secret) is None


async def test_keys_reject_malformed_tokens(db: Database) -> None:
    """A token without its id, its secret or the colon between them verifies as nothing."""
    keys = KeyStore(db)
    key, secret = await keys.create("bob")
    key_id, _, raw = secret.partition(":")
    for token in ["", key_id, f"{key_id}:", f":{raw}", raw, f"other:{raw}"]:
        assert await keys.verify(token) is None, token
    assert (await keys.verify(secret)).name == "bob"


async def test_outbox_claims_are_exclusive_and_honour_the_retry_time(db_url: str, db: Database) -> None:
    """Claimers racing on two Database objects split due deliveries; a claimed one stays locked;
    a failed one waits for its retry time."""
    outbox = OutboxStore(db)
    other = Database(db_url)
    try:
        async with RequestStore(db).transaction() as tx:
            for i in range(10):
                await enqueue(tx, request_id=f"r{i}", url="http://x", body="{}")
        outboxes = [outbox, OutboxStore(other)]
        batches = await asyncio.gather(*(outboxes[i % 2].claim_due(limit=3, lock_seconds=60) for i in range(6)))
    finally:
        await other.close()
    ids = [d.id for batch in batches for d in batch]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert await outbox.claim_due(limit=10, lock_seconds=60) == []  # all locked
    first = batches[0][0]
    await outbox.failed(first.id, error="HTTP 503", status=503, retry_at=time.time() + 3600)
    assert await outbox.claim_due(limit=10, lock_seconds=60) == []
    await outbox.failed(first.id, error="HTTP 503", status=503, retry_at=time.time() - 1)
    assert [d.id for d in await outbox.claim_due(limit=10, lock_seconds=60)] == [first.id]


async def test_server_secret_converges_when_two_processes_race(db_url: str, db: Database) -> None:
    """get_or_create called at once from two Database objects yields one stored value everywhere."""
    other = Database(db_url)
    try:
        await other.migrate()
        values = iter(range(1000))
        got = await asyncio.gather(
            *(secrets.get_or_create(database, "webhook-signing", lambda: f"candidate-{next(values)}") for database in [db, other] * 8)
        )
        async with db.read() as conn:
            stored = list(await conn.scalars(sa.select(server_secrets.c.value)))
        assert len(stored) == 1 and set(got) == set(stored)
        assert await secrets.get_or_create(other, "webhook-signing", lambda: "late") == stored[0]
    finally:
        await other.close()
