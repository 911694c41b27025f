"""Queue overhead on this machine: submit -> COMPLETED for the no-op endpoint
(``openfal/utils/echo``) and status polling throughput, against real ``openfal``
processes on loopback, for several deployments:

  sqlite-1api   one ``openfal serve`` (SQLite, in-process workers)       <- baseline
  pg-1api       one ``openfal serve`` on PostgreSQL
  pg-2api       two ``openfal serve --no-workers`` + one ``openfal worker`` on PostgreSQL

Each figure is printed absolute and as a ratio to the baseline deployment measured in
the same run; ``GET /health`` throughput is printed too, as the bare HTTP stack.

    .venv/bin/python benchmarks/queue_overhead.py [--seconds 5] [--concurrency 16] [-n 100] [--only sqlite-1api]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import ServerProcess, create_pg_database, drop_pg_database, free_port  # noqa: E402


async def polling_rate(urls: list[str], seconds: float, concurrency: int, headers: dict[str, str]) -> float:
    """Requests per second that ``concurrency`` looping clients get, spread over ``urls``."""
    count = 0
    stop = time.monotonic() + seconds
    cycle = itertools.cycle(urls)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency * 2), timeout=30) as client:

        async def loop() -> None:
            nonlocal count
            while time.monotonic() < stop:
                response = await client.get(next(cycle), headers=headers)
                assert response.status_code in (200, 202), response.text
                count += 1

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return count / (time.monotonic() - started)


async def submit_to_done(bases: list[str], headers: dict[str, str], n: int) -> list[float]:
    """Seconds from submit to a 200 status, polling every 2 ms, one request at a time."""
    times = []
    cycle = itertools.cycle(bases)
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(n):
            base = next(cycle)
            t = time.perf_counter()
            body = (await client.post(f"{base}/openfal/utils/echo", json={"i": 1}, headers=headers)).json()
            status_url = base + "/" + body["status_url"].split("/", 3)[3]
            while (await client.get(status_url, headers=headers)).status_code != 200:
                await asyncio.sleep(0.002)
            times.append(time.perf_counter() - t)
    return times


async def measure(bases: list[str], key: str, seconds: float, concurrency: int, n: int) -> dict[str, float]:
    headers = {"Authorization": f"Key {key}"}
    latencies = await submit_to_done(bases, headers, n)
    async with httpx.AsyncClient() as client:
        body = (await client.post(f"{bases[0]}/openfal/utils/echo", json={}, headers=headers)).json()
        while (await client.get(body["status_url"], headers=headers)).status_code != 200:
            await asyncio.sleep(0.01)
    path = body["status_url"].split("/", 3)[3]
    return {
        "submit_done_ms": statistics.median(latencies) * 1000,
        "submit_done_p95_ms": sorted(latencies)[int(n * 0.95) - 1] * 1000,
        "status_rps": await polling_rate([f"{b}/{path}" for b in bases], seconds, concurrency, headers),
        "health_rps": await polling_rate([f"{b}/health" for b in bases], seconds, concurrency, {}),
    }


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "openfal", *args], env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout


async def deployment(name: str, seconds: float, concurrency: int, n: int) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix=f"openfal-bench-{name}-"))
    env = {"OPENFAL_DATA_DIR": str(data), "OPENFAL_POLL_INTERVAL_SECONDS": "0.05"}
    db_name = None
    if name.startswith("pg"):
        db_name = await create_pg_database()
        env["OPENFAL_DATABASE_URL"] = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db_name}"
    cli(env, "migrate")
    key = cli(env, "keys", "create", "--name", "bench").strip().splitlines()[-1]
    processes: list[ServerProcess] = []
    try:
        api_count = 2 if name.endswith("2api") else 1
        separate_worker = api_count > 1
        for i in range(api_count):
            port = free_port()
            args = ["serve", "--port", str(port)] + (["--no-workers"] if separate_worker else [])
            processes.append(ServerProcess(args, env, port=port, log_path=data / f"api{i}.log"))
        if separate_worker:
            processes.append(ServerProcess(["worker", "--backend", "builtin"], env, log_path=data / "worker.log"))
        for p in processes:
            if p.port:
                p.wait_healthy()
        return await measure([p.url for p in processes if p.port], key, seconds, concurrency, n)
    finally:
        for p in processes:
            p.stop()
        if db_name:
            await drop_pg_database(db_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--only", action="append", choices=["sqlite-1api", "pg-1api", "pg-2api"])
    args = parser.parse_args()
    names = args.only or ["sqlite-1api", "pg-1api", "pg-2api"]
    print("command:", " ".join([".venv/bin/python", *sys.argv]))
    print(f"machine: {os.cpu_count()} cpus; load generator in the same machine; {args.concurrency} concurrent pollers for {args.seconds:.0f} s; {args.n} sequential submits")
    results = {name: asyncio.run(deployment(name, args.seconds, args.concurrency, args.n)) for name in names}
    base = results[names[0]]
    print(f"{'deployment':<12} {'submit->done ms (p50/p95)':>26} {'ratio':>6} {'status req/s':>13} {'ratio':>6} {'health req/s':>13}")
    for name, r in results.items():
        print(
            f"{name:<12} {r['submit_done_ms']:>15.1f} / {r['submit_done_p95_ms']:>7.1f} {r['submit_done_ms'] / base['submit_done_ms']:>6.2f}"
            f" {r['status_rps']:>13.0f} {r['status_rps'] / base['status_rps']:>6.2f} {r['health_rps']:>13.0f}"
        )


if __name__ == "__main__":
    main()
