"""Scale-out soak: PostgreSQL + S3-compatible storage + 2 API processes + 3 worker
processes, N requests from concurrent clients, one worker and one API process killed
with SIGKILL mid-run and restarted. Prints figures; exits non-zero if anything was lost
or completed twice.

The S3-compatible server is moto's server mode on loopback (a stand-in for AWS S3,
MinIO or R2); PostgreSQL is the local server on 127.0.0.1:5432.

    .venv/bin/python benchmarks/soak.py --requests 2000 --clients 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
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
from tests.support import ServerProcess, create_pg_database, drop_pg_database, free_port  # noqa: E402


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


@dataclass
class Load:
    submitted: dict[str, dict[str, Any]] = field(default_factory=dict)
    submit_errors: int = 0
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)
    transport_retries: int = 0


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
            while True:
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
                await asyncio.sleep(0.2)


async def chaos(load: Load, cluster: Cluster, total: int, demo: bool, log: list[str]) -> None:
    """SIGKILL worker 0 at 30 % submitted and API 0 at 60 %, each restarted 2 s later."""
    for fraction, kind in [(0.3, "worker"), (0.6, "api")]:
        while len(load.submitted) < total * fraction:
            await asyncio.sleep(0.1)
        if kind == "worker":
            cluster.workers[0].proc.send_signal(signal.SIGKILL)
            cluster.workers[0].proc.wait()
            log.append(f"SIGKILL worker 0 at {len(load.submitted)} submitted")
            await asyncio.sleep(2)
            cluster.workers[0] = cluster.start_worker(0, demo)
        else:
            port = cluster.apis[0].port
            cluster.apis[0].proc.send_signal(signal.SIGKILL)
            cluster.apis[0].proc.wait()
            log.append(f"SIGKILL api 0 at {len(load.submitted)} submitted")
            await asyncio.sleep(2)
            cluster.apis[0] = await asyncio.to_thread(cluster.start_api, 0, port)
        log.append(f"restarted {kind} 0")


async def verify(database_url: str, ids: list[str]) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch("SELECT id, status, error_type, attempts FROM requests")
        charges = await conn.fetch("SELECT request_id, count(*) AS n FROM ledger WHERE kind = 'charge' GROUP BY request_id")
    finally:
        await conn.close()
    by_id = {r["id"]: r for r in rows}
    settled = {r["request_id"]: r["n"] for r in charges}
    return {
        "stored": len(rows),
        "missing": [i for i in ids if i not in by_id],
        "not_completed": [i for i, r in by_id.items() if r["status"] != "COMPLETED"],
        "outcomes": Counter(r["error_type"] or "ok" for r in rows),
        "retried": sum(1 for r in rows if r["attempts"] > 1),
        "settled_twice": [i for i, n in settled.items() if n != 1],
        "unsettled": [i for i in by_id if i not in settled],
    }


async def soak(requests: int, clients: int, image_share: float) -> int:
    data = Path(tempfile.mkdtemp(prefix="openfal-soak-"))
    db_name = await create_pg_database()
    s3, s3_url = start_s3()
    database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db_name}"
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
    }
    cluster = Cluster(env, data)
    demo = image_share > 0
    try:
        subprocess.run([sys.executable, "-m", "openfal", "migrate"], env={**os.environ, **env}, check=True, capture_output=True, cwd=ROOT)
        key = subprocess.run(
            [sys.executable, "-m", "openfal", "keys", "create", "--name", "soak"], env={**os.environ, **env}, check=True, capture_output=True, text=True, cwd=ROOT
        ).stdout.strip().splitlines()[-1]
        cluster.apis = [cluster.start_api(i) for i in range(2)]
        cluster.workers = [cluster.start_worker(i, demo) for i in range(3)]
        load, log, quota = Load(), [], [requests]
        started = time.monotonic()
        await asyncio.gather(chaos(load, cluster, requests, demo, log), *(client_loop(load, cluster, key, quota, image_share) for _ in range(clients)))
        wall = time.monotonic() - started
        result = await verify(database_url, list(load.submitted))
    finally:
        cluster.stop()
        s3.stop()
        await drop_pg_database(db_name)
    lost = len(result["missing"]) + len(set(load.submitted) - set(load.finished))
    print("command:", " ".join([".venv/bin/python", *sys.argv]))
    print(f"cluster: PostgreSQL + S3 (moto server) + 2 API + 3 worker processes on {os.cpu_count()} cpus")
    for line in log:
        print("  ", line)
    print(f"requests answered IN_QUEUE: {len(load.submitted)} of {requests} attempted ({load.submit_errors} submits failed after retries)")
    print(f"client transport errors retried on the other API: {load.transport_retries}")
    print(f"ended COMPLETED (of those answered): {len(load.finished)}")
    extra = result["stored"] - len(load.submitted)
    print(
        f"stored in the database: {result['stored']} ({extra} more than answered; submits carry an Idempotency-Key, so a "
        f"retry after an answer lost with the killed API process finds the first request); outcomes: {dict(result['outcomes'])}"
    )
    print(f"retried after a lost lease: {result['retried']}")
    print(f"lost: {lost}; not completed in store: {len(result['not_completed'])}; settled twice: {len(result['settled_twice'])}; unsettled: {len(result['unsettled'])}")
    print(f"wall {wall:.1f} s, {len(load.finished) / wall:.1f} requests/s")
    bad = lost or extra or result["not_completed"] or result["settled_twice"] or result["unsettled"] or load.submit_errors
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--image-share", type=float, default=0.0, help="fraction of requests that are tiny FLUX images (S3 media)")
    args = parser.parse_args()
    sys.exit(asyncio.run(soak(args.requests, args.clients, args.image_share)))


if __name__ == "__main__":
    main()
