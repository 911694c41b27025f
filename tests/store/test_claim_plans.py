"""A claim's plan serves fair share from the queue index on both databases, whatever
the depth: it reads about as much at 20,000 queued as at 2,000 (it once ordered every
queued request: 2.4 ms at 100 queued, 23 ms at 10,000 on PostgreSQL). Checked against
each planner as it is, with and without fresh statistics, and on PostgreSQL with the
generic plan a prepared statement falls back to after five executions."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from openfal.store.claim_statements import ClaimStatements
from openfal.store.db import Database
from openfal.store.schema import api_keys, requests
from tests.support import pg_database

KEYS = 50
VALUES: dict[str, Any] = {"backends": ["builtin"], "limit": 3}


async def fill(db: Database, start: int, count: int) -> None:
    now = time.time()
    rows = [
        {"id": str(uuid.uuid4()), "app": "a/b", "endpoint_id": "a/b", "backend": "builtin", "key_id": f"k{i % KEYS:03d}",
         "status": "IN_QUEUE", "priority": i % 2, "input": {}, "base_url": "http://x", "store_io": True, "created_at": now + i,
         "attempts": 0, "cancel_requested": False, "backend_state": {}, "version": 0}
        for i in range(start, start + count)
    ]
    rows += [{**row, "id": str(uuid.uuid4()), "status": "COMPLETED"} for row in rows[: count // 2]]  # done ones stay in the table
    async with db.write() as conn:
        for at in range(0, len(rows), 5000):
            await conn.execute(requests.insert(), rows[at : at + 5000])


@pytest.fixture
async def pg() -> AsyncIterator[Database]:
    async with pg_database() as url:
        db = Database(url)
        await db.migrate()
        async with db.write() as conn:  # no statistics but the ones the test takes
            await conn.execute(sa.text("ALTER TABLE requests SET (autovacuum_enabled = false)"))
        yield db
        await db.close()


def _statement(db: Database) -> tuple[str, list[Any]]:
    """The candidate query as the driver runs it: $n placeholders and their values."""
    claims = ClaimStatements(sqlite=db.is_sqlite, default_key_concurrency=None)
    compiled = claims.backends.candidates.compile(dialect=db.engine.dialect)
    state = compiled.construct_expanded_state({"now": time.time(), **VALUES})
    return state.statement, list(state.positional_parameters)


async def pg_plan(db: Database, *, generic: bool = False) -> dict[str, Any]:
    sql, values = _statement(db)
    async with db.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        if generic:
            await raw.execute("SET plan_cache_mode = force_generic_plan")
            await raw.execute(f"PREPARE claim AS {sql}")
            args = ", ".join(_literal(v) for v in values)
            plan = await raw.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE claim({args})")
            await raw.execute("DEALLOCATE claim; RESET plan_cache_mode")
        else:
            plan = await raw.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *values)
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]


def _literal(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _nodes(child))]


def _pages(plan: dict[str, Any]) -> int:
    top = plan["Plan"]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))


def _check_pg(plan: dict[str, Any]) -> None:
    """No read of the requests scans the table (the key scan may walk a key-first index
    when the statistics say most rows are queued: its walk is then as short)."""
    scans = [(n.get("Alias"), n["Node Type"], n.get("Index Name")) for n in _nodes(plan["Plan"]) if n.get("Relation Name") == "requests"]
    assert not [s for s in scans if s[1] == "Seq Scan"], scans
    heads = [s for s in scans if s[0] in {"head", "head_1"}]
    assert heads and all(name in {"ix_requests_queue", "ix_requests_key_status"} for _, _, name in heads), scans


@pytest.mark.postgres
@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "fresh-statistics"])
@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
async def test_a_postgresql_claim_reads_as_much_at_20000_queued_as_at_2000(pg: Database, analyzed: bool, generic: bool) -> None:
    pages = []
    for start, count in ((0, 2_000), (2_000, 18_000)):
        await fill(pg, start, count)
        if analyzed:
            async with pg.write(autocommit=True) as conn:
                await conn.execute(sa.text("ANALYZE requests"))
        plan = await pg_plan(pg, generic=generic)
        _check_pg(plan)
        pages.append(_pages(plan))
    assert pages[1] <= pages[0] * 1.5 + 20, pages


@pytest.fixture
async def sqlite(tmp_path: Any) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/plans.db")
    await db.migrate()
    yield db
    await db.close()


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "fresh-statistics"])
async def test_a_sqlite_claim_searches_the_queue_index_and_never_scans_requests(sqlite: Database, analyzed: bool) -> None:
    await fill(sqlite, 0, 5_000)
    sql, values = _statement(sqlite)
    async with sqlite.engine.connect() as conn:
        if analyzed:
            await conn.exec_driver_sql("ANALYZE")
        plan = [row[-1] for row in (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", tuple(values))).all()]
    on_requests = [line for line in plan if " requests" in f" {line.split(' AS ')[0]}" or " AS " in line]
    assert not [line for line in plan if line.startswith("SCAN") and "requests" in line and "heads" not in line], plan
    assert any("INDEX ix_requests_queue" in line for line in plan), plan
    assert on_requests


async def _hold_keys(db: Database, count: int) -> None:
    """The first ``count`` keys of ``fill`` at their limit: max_concurrent 1 and one
    request running."""
    now = time.time()
    keys = [{"id": f"k{i:03d}", "name": f"k{i}", "secret_hash": "x", "created_at": now, "is_admin": False, "max_concurrent": 1} for i in range(count)]
    running = [
        {"id": str(uuid.uuid4()), "app": "a/b", "endpoint_id": "a/b", "backend": "builtin", "key_id": key["id"], "status": "IN_PROGRESS",
         "priority": 0, "input": {}, "base_url": "http://x", "store_io": True, "created_at": now, "attempts": 1,
         "cancel_requested": False, "backend_state": {}, "version": 0, "worker_id": "w", "lease_expires_at": now + 600}
        for key in keys
    ]  # fmt: skip
    async with db.write() as conn:
        await conn.execute(api_keys.insert(), keys)
        await conn.execute(requests.insert(), running)


@pytest.mark.postgres
async def test_keys_running_their_limit_are_passed_over_before_their_heads_are_looked_for(pg: Database) -> None:
    """A deep queue of keys at their limit once cost every claim a head and a count of
    running requests per key (~16 us a key on PostgreSQL): now only the keys that may
    run have their heads looked for."""
    await fill(pg, 0, 2_000)
    await _hold_keys(pg, KEYS - 1)
    plan = await pg_plan(pg, generic=True)
    heads = [n for n in _nodes(plan["Plan"]) if n.get("Relation Name") == "requests" and n.get("Alias") == "head"]
    assert heads and sum(int(n["Actual Loops"]) for n in heads) == 1, heads


@pytest.mark.postgres
async def test_claims_run_on_generic_plans_without_jit_or_table_scans(pg: Database) -> None:
    """Set for the claimers' pool, not per claim (a round trip each time): a plan made
    while the table was small must still probe the index once the queue is deep."""
    async with pg.write(claim=True) as conn:
        settings = (await conn.execute(sa.text("SELECT current_setting('plan_cache_mode'), current_setting('jit'), current_setting('enable_seqscan')"))).one()
    assert tuple(settings) == ("force_generic_plan", "off", "off")
    async with pg.write() as conn:  # the rest of the store plans as PostgreSQL chooses
        assert (await conn.execute(sa.text("SELECT current_setting('enable_seqscan')"))).scalar() == "on"
