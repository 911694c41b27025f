"""Scale-out soak: PostgreSQL + S3-compatible storage + 2 API processes + 3 worker
processes, N requests from concurrent clients, one worker and one API process killed
with SIGKILL mid-run and restarted. Prints figures; exits non-zero if anything was lost
or completed twice, if the killed worker's requests were not retried after their leases
expired, if an image's file is missing from S3, or if the ledger is off by a micro-dollar.

The S3-compatible server is moto's server mode on loopback (a stand-in for AWS S3,
MinIO or R2); PostgreSQL is the test server (tests/support.PG_ADMIN: `OPENFAL_TEST_PG`, else 127.0.0.1:5432).

    .venv/bin/python benchmarks/soak.py --requests 2000 --clients 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support import ServerProcess, create_pg_database, drop_pg_database, free_port, pg_database_url  # noqa: E402


@dataclass
class Cluster:
    env: dict[str, str]
    data: Path
    apis: list[ServerProcess] = field(default_factory=list)
    workers: list[ServerProcess] = field(default_factory=list)

    def start_api(self, index: int, port: int | None = None) -> ServerProcess:
        port = port or free_port()
        api = ServerProcess(["serve", "--no-workers", "--port", str(port)], self.env, port=port, log_path=self.data / f"api{index}.log")
        api.wait_healthy()
        return api

    def start_worker(self, index: int, demo: bool) -> ServerProcess:
        args = ["worker", "--backend", "builtin"] + (["--backend", "local", "--demo"] if demo else [])
        return ServerProcess(args, self.env, log_path=self.data / f"worker{index}.log")

    def stop(self) -> None:
        for proc in self.apis + self.workers:
            proc.stop()


def start_s3() -> tuple[Any, str]:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="soak", aws_secret_access_key="soak").create_bucket(Bucket="openfal-soak")
    return server, url


#: a request not COMPLETED this long after its submit counts as lost (the soak then ends
#: with a failure instead of waiting forever); leases are 4 s and attempts 5
LOST_AFTER_SECONDS = 120.0
#: per-request prices: every outcome's settlement shows in the ledger
PRICES = {"openfal/utils/*": {"per_request": 0.01}, "fal-ai/flux-1/schnell": {"per_request": 0.02}}
CREDIT_DOLLARS = 1000.0
MICROS = 1_000_000


@dataclass
class Load:
    submitted: dict[str, dict[str, Any]] = field(default_factory=dict)
    submit_errors: int = 0
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    transport_retries: int = 0
    clients_done: int = 0


async def client_loop(load: Load, cluster: Cluster, key: str, quota: list[int], image_share: float) -> None:
    headers = {"Authorization": f"Key {key}"}
    async with httpx.AsyncClient(timeout=30) as http:
        while quota[0] > 0:
            quota[0] -= 1
            image = random.random() < image_share
            path, body = (
                ("fal-ai/flux-1/schnell", {"prompt": "soak", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 2})
                if image
                else ("openfal/utils/sleep", {"seconds": random.uniform(0.05, 0.3), "steps": 2})
            )
            submitted = None
            # one key per logical request: a retry after an answer lost with a killed API
            # process gets the first request back instead of queueing a second one
            once = {**headers, "Idempotency-Key": str(uuid.uuid4())}
            for _ in range(20):
                api = random.choice(cluster.apis)
                try:
                    response = await http.post(f"{api.url}/{path}", json=body, headers=once)
                except httpx.TransportError:
                    load.transport_retries += 1
                    await asyncio.sleep(0.2)
                    continue
                if response.status_code == 200:
                    submitted = response.json()
                break
            if submitted is None:
                load.submit_errors += 1
                continue
            rid = submitted["request_id"]
            load.submitted[rid] = submitted
            status_path = submitted["status_url"].split("/", 3)[3]
            give_up = time.monotonic() + LOST_AFTER_SECONDS
            while True:
                if time.monotonic() > give_up:
                    load.lost.append(rid)
                    break
                api = random.choice(cluster.apis)
                try:
                    response = await http.get(f"{api.url}/{status_path}", headers=headers)
                except httpx.TransportError:
                    load.transport_retries += 1
                    await asyncio.sleep(0.2)
                    continue
                if response.status_code == 200:
                    load.finished[rid] = response.json()
                    break
                if response.status_code == 404:  # the store does not know it: lost at once
                    load.lost.append(rid)
                    break
                await asyncio.sleep(0.2)
    load.clients_done += 1


async def running_on(database_url: str, pid: int) -> list[str]:
    """The requests the worker process ``pid`` holds right now (via the worker registry)."""
    import asyncpg

    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch(
            "SELECT r.id FROM requests r JOIN workers w ON r.worker_id = w.id WHERE w.pid = $1 AND r.status = 'IN_PROGRESS'", pid
        )
    finally:
        await conn.close()
    return [r["id"] for r in rows]


async def chaos(load: Load, cluster: Cluster, total: int, clients: int, demo: bool, log: list[str], killed: list[str], database_url: str) -> None:
    """SIGKILL worker 0 at 30 % submitted (while it holds requests, whose ids go to
    ``killed``) and API 0 at 60 %, each restarted 2 s later."""
    for fraction, kind in [(0.3, "worker"), (0.6, "api")]:
        # the worker is killed holding two requests or more, so one finishing between the
        # look and the kill still leaves one whose lease must expire
        while len(load.submitted) < total * fraction or (kind == "worker" and len(held := await running_on(database_url, cluster.workers[0].proc.pid)) < 2):
            if load.clients_done == clients:
                log.append(f"the load ended before the {kind} kill")
                return
            await asyncio.sleep(0.05)
        if kind == "worker":
            cluster.workers[0].kill()  # SIGKILL
            cluster.workers[0].stop()  # closes its log
            killed.extend(held)
            log.append(f"SIGKILL worker 0 at {len(load.submitted)} submitted, holding {len(held)} requests")
            await asyncio.sleep(2)
            cluster.workers[0] = cluster.start_worker(0, demo)
        else:
            port = cluster.apis[0].port
            cluster.apis[0].kill()  # SIGKILL
            cluster.apis[0].stop()  # closes its log
            log.append(f"SIGKILL api 0 at {len(load.submitted)} submitted")
            await asyncio.sleep(2)
            cluster.apis[0] = await asyncio.to_thread(cluster.start_api, 0, port)
        log.append(f"restarted {kind} 0")


async def verify(database_url: str, ids: list[str], key_id: str, killed: list[str], s3_url: str) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch("SELECT id, endpoint_id, status, error_type, attempts, result_body FROM requests")
        charges = await conn.fetch("SELECT request_id, count(*) AS n, sum(amount_micros) AS amount FROM ledger WHERE kind = 'charge' GROUP BY request_id")
        balance = await conn.fetchval("SELECT balance_micros FROM api_keys WHERE id = $1", key_id)
        journal = int(await conn.fetchval("SELECT coalesce(sum(amount_micros), 0) FROM ledger WHERE key_id = $1", key_id))
    finally:
        await conn.close()
    by_id = {r["id"]: r for r in rows}
    settled = {r["request_id"]: r["n"] for r in charges}
    charged = -sum(int(r["amount"]) for r in charges)
    ok = [r for r in rows if r["status"] == "COMPLETED" and r["error_type"] is None]
    price = {"openfal/utils/sleep": round(0.01 * MICROS), "fal-ai/flux-1/schnell": round(0.02 * MICROS)}
    images = [r for r in ok if r["endpoint_id"] == "fal-ai/flux-1/schnell"]
    return {
        "stored": len(rows),
        "missing": [i for i in ids if i not in by_id],
        "not_completed": [i for i, r in by_id.items() if r["status"] != "COMPLETED"],
        "outcomes": Counter(r["error_type"] or "ok" for r in rows),
        "retried": sum(1 for r in rows if r["attempts"] > 1),
        "killed_retried": [i for i in killed if by_id[i]["attempts"] > 1 and by_id[i]["error_type"] is None],
        "settled_twice": [i for i, n in settled.items() if n != 1],
        "unsettled": [i for i in by_id if i not in settled],
        "charged": charged,
        "charged_expected": sum(price[r["endpoint_id"]] for r in ok),
        "balance": balance,
        "journal": journal,
        "credit": round(CREDIT_DOLLARS * MICROS),
        "images_ok": len(images),
        "images_missing_in_s3": await asyncio.to_thread(missing_in_s3, s3_url, images),
    }


def missing_in_s3(s3_url: str, images: list[Any]) -> list[str]:
    """The image URLs of successful image requests whose object is not in the bucket."""
    import json
    from urllib.parse import urlsplit

    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", aws_access_key_id="soak", aws_secret_access_key="soak")
    missing = []
    for row in images:
        body = row["result_body"] if isinstance(row["result_body"], dict) else json.loads(row["result_body"])
        for image in body["images"]:
            key = urlsplit(image["url"]).path.split("/openfal-soak/", 1)[-1]
            try:
                s3.head_object(Bucket="openfal-soak", Key=key)
            except Exception:
                missing.append(image["url"])
    return missing


@dataclass
class Report:
    figures: dict[str, Any]
    problems: list[str]
    printed: str


async def soak(requests: int, clients: int, image_share: float) -> Report:
    data = Path(tempfile.mkdtemp(prefix="openfal-soak-"))
    db_name = await create_pg_database()
    s3, s3_url = start_s3()
    database_url = pg_database_url(db_name)
    env = {
        "OPENFAL_DATA_DIR": str(data),
        "OPENFAL_DATABASE_URL": database_url,
        "OPENFAL_MEDIA_BACKEND": "s3",
        "OPENFAL_S3_BUCKET": "openfal-soak",
        "OPENFAL_S3_ENDPOINT_URL": s3_url,
        "AWS_ACCESS_KEY_ID": "soak",
        "AWS_SECRET_ACCESS_KEY": "soak",
        "OPENFAL_LEASE_SECONDS": "4",
        "OPENFAL_HEARTBEAT_SECONDS": "1",
        "OPENFAL_MAX_ATTEMPTS": "5",
        "OPENFAL_CONCURRENCY": '{"builtin": 8, "local": 1}',
        "OPENFAL_POLL_INTERVAL_SECONDS": "0.1",
        "OPENFAL_PRICES": json.dumps(PRICES),
    }
    cluster = Cluster(env, data)
    demo = image_share > 0
    try:
        subprocess.run([sys.executable, "-m", "openfal", "migrate"], env={**os.environ, **env}, check=True, capture_output=True, cwd=ROOT)
        key = subprocess.run(
            [sys.executable, "-m", "openfal", "keys", "create", "--name", "soak"], env={**os.environ, **env}, check=True, capture_output=True, text=True, cwd=ROOT
        ).stdout.strip().splitlines()[-1]
        key_id = key.split(":", 1)[0]
        subprocess.run(
            [sys.executable, "-m", "openfal", "keys", "credit", key_id, str(CREDIT_DOLLARS)], env={**os.environ, **env}, check=True, capture_output=True, cwd=ROOT
        )
        cluster.apis = [cluster.start_api(i) for i in range(2)]
        cluster.workers = [cluster.start_worker(i, demo) for i in range(3)]
        load, log, quota, killed = Load(), [], [requests], []
        started = time.monotonic()
        await asyncio.gather(
            chaos(load, cluster, requests, clients, demo, log, killed, database_url),
            *(client_loop(load, cluster, key, quota, image_share) for _ in range(clients)),
        )
        wall = time.monotonic() - started
        result = await verify(database_url, list(load.submitted), key_id, killed, s3_url)
    finally:
        cluster.stop()
        s3.stop()
        await drop_pg_database(db_name)
    lost = len(result["missing"]) + len(set(load.submitted) - set(load.finished))
    extra = result["stored"] - len(load.submitted)
    lines = [
        "command: " + " ".join([".venv/bin/python", *sys.argv]),
        f"cluster: PostgreSQL + S3 (moto server) + 2 API + 3 worker processes on {os.cpu_count()} cpus",
        *("   " + line for line in log),
        f"requests answered IN_QUEUE: {len(load.submitted)} of {requests} attempted ({load.submit_errors} submits failed after retries)",
        f"client transport errors retried on the other API: {load.transport_retries}",
        f"ended COMPLETED (of those answered): {len(load.finished)}; given up on after {LOST_AFTER_SECONDS:g} s or 404: {len(load.lost)}",
        f"stored in the database: {result['stored']} ({extra} more than answered; submits carry an Idempotency-Key, so a "
        f"retry after an answer lost with the killed API process finds the first request); outcomes: {dict(result['outcomes'])}",
        f"retried after a lost lease: {result['retried']}; of the {len(killed)} the killed worker held, "
        f"{len(result['killed_retried'])} were retried and succeeded",
        f"images delivered: {result['images_ok']}, missing in S3: {len(result['images_missing_in_s3'])}",
        f"ledger: charged {result['charged']} micro-dollars (expected {result['charged_expected']}), balance {result['balance']} "
        f"= credit {result['credit']} - charged: {result['balance'] == result['credit'] - result['charged']}, journal sum {result['journal']}",
        f"lost: {lost}; not completed in store: {len(result['not_completed'])}; settled twice: {len(result['settled_twice'])}; unsettled: {len(result['unsettled'])}",
        f"wall {wall:.1f} s, {len(load.finished) / wall:.1f} requests/s",
    ]
    checks = {
        "requests were lost": lost or load.lost,
        "more requests stored than answered": extra,
        "requests not COMPLETED in the store": result["not_completed"],
        "requests settled twice": result["settled_twice"],
        "requests never settled": result["unsettled"],
        "submits failed": load.submit_errors,
        "the killed worker held no request that was retried after its lease expired": not result["killed_retried"],
        "no image request succeeded (S3 untested)": image_share > 0 and not result["images_ok"],
        "image files missing in S3": result["images_missing_in_s3"],
        "nothing was charged": not result["charged"],
        "charges differ from the prices of what succeeded": result["charged"] != result["charged_expected"],
        "the balance is not credit minus charges": result["balance"] != result["credit"] - result["charged"],
        "the ledger's sum is not the balance": result["journal"] != result["balance"],
    }
    problems = [name for name, failed in checks.items() if failed]
    lines.append("problems: " + ("; ".join(problems) if problems else "none"))
    printed = "\n".join(lines)
    print(printed)
    return Report({**result, "killed": killed, "lost": lost}, problems, printed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--image-share", type=float, default=0.05, help="fraction of requests that are tiny FLUX images (S3 media)")
    args = parser.parse_args()
    sys.exit(1 if asyncio.run(soak(args.requests, args.clients, args.image_share)).problems else 0)


if __name__ == "__main__":
    main()
