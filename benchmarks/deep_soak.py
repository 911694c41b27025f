"""Deep-queue soak: N echo requests from K keys queued at once through two API
processes on PostgreSQL, then drained by two worker processes, one of them SIGKILLed
halfway. Prints figures; exits non-zero if a request was lost or run to completion
twice, if fair share did not hold, or if any key's ledger does not balance.

Fair share, checked on the drain: every request was queued before the workers started,
so claims go round-robin across keys (priority is the same for all): a key's j-th
request is due in round j, i.e. after at most ``sum over keys of min(n_k, j)`` claims.
A request "waits more than 2x its fair turn" when more than twice that many (plus the
slots claiming at once) were claimed before it; requests the killed worker held, which
waited for their lease, are left out.

Keys are skewed: ``--heavy`` keys (default 10) share half the requests, the others the
rest, so a fair queue must keep the light keys' requests moving past the heavy bursts.

    .venv/bin/python benchmarks/deep_soak.py --requests 100000 --keys 1000   # the full size
    .venv/bin/python benchmarks/deep_soak.py --requests 20000 --keys 1000    # what a shared 2-core machine drains in ~10 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support import ServerProcess, create_pg_database, drop_pg_database, free_port, pg_database_url  # noqa: E402

PRICE_MICROS = 1000  # $0.001 an echo
CREDIT_MICROS = 10_000_000  # $10 a key: more than any key spends
WORKER_SLOTS = 8


def plan(requests: int, keys: int, heavy: int) -> list[int]:
    """How many requests each key submits: half over the heavy keys, half over the rest."""
    light = keys - heavy
    counts = [requests // 2 // heavy] * heavy + [(requests - requests // 2) // light] * light
    counts[-1] += requests - sum(counts)
    return counts


async def make_keys(database_url: str, keys: int) -> list[tuple[str, str]]:
    """(key id, secret) of ``keys`` customer keys, each with CREDIT_MICROS."""
    from openfal.store.api_keys import KeyStore
    from openfal.store.db import Database

    db = Database(database_url)
    try:
        store = KeyStore(db)
        made = [await store.create(f"soak{i}", credit_micros=CREDIT_MICROS) for i in range(keys)]
    finally:
        await db.close()
    return [(key.id, secret) for key, secret in made]


async def submit_all(apis: list[ServerProcess], secrets: list[str], counts: list[int], clients: int) -> tuple[list[str], int]:
    """Every key's requests, interleaved, from ``clients`` concurrent clients over both
    API processes; (request ids, submits that failed)."""
    work = [(secret, n) for secret, count in zip(secrets, counts, strict=True) for n in range(count)]
    work.sort(key=lambda item: item[1])  # round by round: key order mixes heavy and light
    ids: list[str] = []
    failed = 0
    queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)

    async def client(index: int) -> None:
        nonlocal failed
        async with httpx.AsyncClient(timeout=60) as http:
            while not queue.empty():
                secret, n = queue.get_nowait()
                api = apis[(index + n) % len(apis)]
                for _ in range(5):
                    try:
                        response = await http.post(f"{api.url}/openfal/utils/echo", json={"n": n}, headers={"Authorization": f"Key {secret}"})
                    except httpx.TransportError:
                        await asyncio.sleep(0.2)
                        continue
                    if response.status_code == 200:
                        ids.append(response.json()["request_id"])
                    else:
                        failed += 1
                    break
                else:
                    failed += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return ids, failed


async def fetch(database_url: str, query: str, *args: Any) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def drain(database_url: str, workers: list[ServerProcess], total: int, log: list[str], timeout: float) -> tuple[float, list[str]]:
    """Wait for every request to complete, SIGKILLing worker 0 once half are done;
    (seconds, the requests it held)."""
    started, held = time.monotonic(), []
    while True:
        done = (await fetch(database_url, "SELECT count(*) AS n FROM requests WHERE status = 'COMPLETED'"))[0]["n"]
        if not held and done >= total // 2:
            pid = workers[0].proc.pid
            held = [r["id"] for r in await fetch(database_url, "SELECT r.id FROM requests r JOIN workers w ON r.worker_id = w.id WHERE w.pid = $1 AND r.status = 'IN_PROGRESS'", pid)]
            workers[0].proc.send_signal(signal.SIGKILL)
            workers[0].proc.wait()
            log.append(f"SIGKILL worker 0 at {done} of {total} completed, holding {len(held)} requests")
            held = held or ["-"]
        if done >= total or time.monotonic() - started > timeout:
            return time.monotonic() - started, [h for h in held if h != "-"]
        await asyncio.sleep(1.0)


def fairness(rows: list[Any], counts_by_key: dict[str, int], slots: int, skip: set[str]) -> tuple[int, float, list[str]]:
    """(requests checked, worst actual/fair ratio, requests past 2x their fair turn)."""
    order = sorted((r for r in rows if r["started_at"] is not None), key=lambda r: (r["started_at"], r["seq"]))
    sizes = sorted(counts_by_key.values())
    index_in_key: dict[str, int] = defaultdict(int)
    late, worst, checked = [], 0.0, 0
    for rank, row in enumerate(order):
        index_in_key[row["key_id"]] += 1
        if row["id"] in skip or row["attempts"] > 1:
            continue
        j = index_in_key[row["key_id"]]
        fair = sum(min(n, j) for n in sizes)  # claims by the end of round j
        checked += 1
        worst = max(worst, rank / fair)
        if rank > 2 * fair + slots:
            late.append(row["id"])
    return checked, worst, late


async def soak(args: argparse.Namespace) -> int:
    data = Path(tempfile.mkdtemp(prefix="openfal-deep-soak-"))
    db_name = await create_pg_database()
    database_url = pg_database_url(db_name)
    env = {
        "OPENFAL_DATA_DIR": str(data),
        "OPENFAL_DATABASE_URL": database_url,
        "OPENFAL_LEASE_SECONDS": "4",
        "OPENFAL_HEARTBEAT_SECONDS": "1",
        "OPENFAL_CONCURRENCY": json.dumps({"builtin": WORKER_SLOTS}),
        "OPENFAL_PRICES": json.dumps({"openfal/utils/*": {"per_request": PRICE_MICROS / 1e6}}),
    }
    apis: list[ServerProcess] = []
    workers: list[ServerProcess] = []
    log: list[str] = []
    try:
        subprocess.run([sys.executable, "-m", "openfal", "migrate"], env={**os.environ, **env}, check=True, capture_output=True, cwd=ROOT)
        keys = await make_keys(database_url, args.keys)
        counts = plan(args.requests, args.keys, args.heavy)
        for i in range(2):
            port = free_port()
            apis.append(ServerProcess(["serve", "--no-workers", "--port", str(port)], env, port=port, log_path=data / f"api{i}.log"))
        for api in apis:
            api.wait_healthy()
        started = time.monotonic()
        ids, failed = await submit_all(apis, [secret for _, secret in keys], counts, args.clients)
        submit_seconds = time.monotonic() - started
        log.append(f"queued {len(ids)} in {submit_seconds:.0f} s ({len(ids) / submit_seconds:.0f}/s), {failed} submits failed")
        workers = [ServerProcess(["worker", "--backend", "builtin"], env, log_path=data / f"worker{i}.log") for i in range(2)]
        drain_seconds, held = await drain(database_url, workers, len(ids), log, args.timeout)
        rows = await fetch(database_url, "SELECT id, seq, key_id, status, error_type, attempts, started_at FROM requests")
        charges = await fetch(database_url, "SELECT request_id, count(*) AS n FROM ledger WHERE kind = 'charge' GROUP BY request_id")
        balances = await fetch(
            database_url,
            "SELECT k.id, k.balance_micros AS balance, coalesce(sum(l.amount_micros), 0) AS journal, "
            "coalesce(sum(CASE WHEN l.kind = 'charge' THEN -l.amount_micros ELSE 0 END), 0) AS charged "
            "FROM api_keys k LEFT JOIN ledger l ON l.key_id = k.id GROUP BY k.id, k.balance_micros",
        )
    finally:
        for proc in apis + workers:
            proc.stop()
        await drop_pg_database(db_name)
    by_id = {r["id"]: r for r in rows}
    settled = Counter({r["request_id"]: r["n"] for r in charges})
    ok = Counter(r["key_id"] for r in rows if r["status"] == "COMPLETED" and r["error_type"] is None)
    key_counts = {key_id: n for (key_id, _), n in zip(keys, counts, strict=True)}
    checked, worst, late = fairness(rows, key_counts, 2 * WORKER_SLOTS, set(held))
    unbalanced = [b["id"] for b in balances if b["balance"] != b["journal"] or b["charged"] != ok[b["id"]] * PRICE_MICROS or b["balance"] != CREDIT_MICROS - b["charged"]]
    checks = {
        "requests lost (answered, not stored)": [i for i in ids if i not in by_id],
        "requests not COMPLETED": [i for i, r in by_id.items() if r["status"] != "COMPLETED"],
        "requests that failed": [i for i, r in by_id.items() if r["error_type"] is not None],
        "requests settled more or less than once": [i for i in by_id if settled[i] != 1],
        "more requests stored than answered": len(rows) - len(ids) if len(rows) > len(ids) else 0,
        "submits failed": failed,
        "requests past 2x their fair turn": late,
        "keys whose ledger does not balance": unbalanced,
    }
    problems = [name for name, bad in checks.items() if bad]
    lines = [
        "command: " + " ".join([".venv/bin/python", *sys.argv]),
        f"cluster: PostgreSQL + 2 API (serve --no-workers) + 2 workers ({WORKER_SLOTS} builtin slots each) on {os.cpu_count()} shared cpus",
        f"load: {args.requests} echo requests from {args.keys} keys ({args.heavy} heavy keys with half of them), {args.clients} clients",
        *("   " + line for line in log),
        f"drain: {len(ids)} in {drain_seconds:.0f} s ({len(ids) / max(drain_seconds, 1e-9):.0f} requests/s) from a queue {len(ids)} deep",
        f"fair share: {checked} requests checked (not retried), worst claim rank / fair round end {worst:.2f}, past 2x: {len(late)}",
        f"retried after the kill: {sum(1 for r in rows if r['attempts'] > 1)} (the killed worker held {len(held)}; one it finished "
        "between the look and the kill is not retried), each COMPLETED and charged once",
        f"ledger: {len(balances)} keys, unbalanced {len(unbalanced)}; charges {sum(settled.values())} for {len(by_id)} requests",
        "problems: " + ("; ".join(problems) if problems else "none"),
    ]
    print("\n".join(lines))
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--heavy", type=int, default=10, help="keys that submit half of the requests between them")
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds the drain may take before the soak gives up")
    sys.exit(asyncio.run(soak(parser.parse_args())))


if __name__ == "__main__":
    main()
