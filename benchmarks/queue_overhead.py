"""Queue overhead, measured against the web framework's own speed.

Each deployment is measured beside a *bare* FastAPI/uvicorn handler that returns a
constant status JSON (same uvicorn settings as ``openfal serve``), started by this
script and driven by the same load generator in the same run, right before each
figure, so every figure is printed with that baseline and the ratio to it:

  sqlite-1api   one ``openfal serve`` (SQLite, in-process workers, key auth)
                  vs one bare process
  pg-2api       two ``openfal serve --no-workers`` + one ``openfal worker`` on PostgreSQL
                  vs two bare processes (one wrk per process, run at the same time)

Throughput is measured with wrk (the Python load generator caps at ~700 req/s):
``apt-get install -y wrk``. Figures: status polls of a COMPLETED, an IN_QUEUE and an
IN_PROGRESS request, ``GET /health``, submits accepted per second (wrk POSTs to
``openfal/utils/echo``), submit -> COMPLETED of echo (sequential, polling without
pause), the CPU an idle server uses, and the CPU of 1,000 idle SSE status streams.

``--depth N`` (``--depth-keys K``) adds the deep-queue figures: each deployment again
with N requests queued on its backend over K keys (each key at its ``max_concurrent``,
so nothing drains them): the status poll of the deepest one against the bare handler,
submits accepted and the API processes' CPU per submit against the same deployment's empty-queue figures, and a claim's p50 at
N queued against 100 queued (store-level, on a fresh database of the same kind).

    .venv/bin/python benchmarks/queue_overhead.py [--seconds 6] [--connections 32] [--only sqlite-1api] [--streams 1000]
    .venv/bin/python benchmarks/queue_overhead.py --depth 100000 --depth-keys 100 --streams 0
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.deep_queue import claim_p50, fill_deployment  # noqa: E402
from tests.support import ServerProcess, create_pg_database, drop_pg_database, free_port, pg_database_url  # noqa: E402

#: what the bare handler answers: an IN_QUEUE status as openfal shapes it
BARE_BODY = {
    "status": "IN_QUEUE",
    "request_id": "00000000-0000-0000-0000-000000000000",
    "response_url": "http://127.0.0.1/bare/app/requests/00000000-0000-0000-0000-000000000000",
    "status_url": "http://127.0.0.1/bare/app/requests/00000000-0000-0000-0000-000000000000/status",
    "cancel_url": "http://127.0.0.1/bare/app/requests/00000000-0000-0000-0000-000000000000/cancel",
    "queue_position": 0,
}
BARE_PATH = "/bare/app/requests/00000000-0000-0000-0000-000000000000/status"
SUBMIT_LUA = """
wrk.method = "POST"
wrk.body = '{"i": 1}'
wrk.headers["Content-Type"] = "application/json"
"""
TICKS = os.sysconf("SC_CLK_TCK")


def bare_server(port: int) -> None:
    """The baseline: FastAPI + uvicorn, one route, a constant body."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.get("/bare/app/requests/{request_id}/status")
    async def status(request_id: str) -> JSONResponse:
        return JSONResponse(BARE_BODY, status_code=202)

    uvicorn.run(app, host="127.0.0.1", port=port, proxy_headers=True, log_level="warning", access_log=False)


class Bare:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, __file__, "--bare-server", str(self.port)])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{BARE_PATH}"

    def wait(self) -> None:
        for _ in range(200):
            try:
                if httpx.get(self.url, timeout=1).status_code == 202:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("the bare server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# -- wrk ---------------------------------------------------------------------------


def wrk_command(url: str, args: argparse.Namespace, *, key: str | None = None, script: Path | None = None) -> list[str]:
    command = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds:g}s", "--latency"]
    if key:
        command += ["-H", f"Authorization: Key {key}"]
    if script:
        command += ["-s", str(script)]
    return [*command, url]


#: requests wrk gave up on (no answer in 2 s) in the last wrk() call: reported, not fatal
TIMEOUTS = [0]


def wrk(commands: list[list[str]]) -> tuple[float, float]:
    """Run the wrk commands at the same time: (total req/s, worst p50 ms). Non-2xx
    answers and connection errors make the figure invalid, so they fail the run;
    timeouts (a loaded shared machine) are counted in ``TIMEOUTS`` and reported."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    rate, p50 = 0.0, 0.0
    TIMEOUTS[0] = 0
    for proc in procs:
        out = proc.communicate()[0]
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if "Non-2xx" in out or (errors and any(int(n) for n in errors.groups()[:3])):
            raise RuntimeError(f"wrk saw errors:\n{out}")
        TIMEOUTS[0] += int(errors.group(4)) if errors else 0
        rate += float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        match = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            p50 = max(p50, value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit])
    return rate, p50


# -- CPU of a process ----------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def core_share(pid: int, seconds: float) -> float:
    """The share of one core the process used over ``seconds`` (0.01 = 1%)."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


# -- driving openfal -----------------------------------------------------------------


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "openfal", *args], env={**os.environ, **env}, capture_output=True, text=True, check=True
    ).stdout


class Lean:
    """Sequential HTTP/1.1 calls on one kept-alive connection with the standard
    library's client: about 0.4 ms a round trip here, where httpx's async client takes
    1 ms of its own and would be most of what submit -> COMPLETED measures."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = httpx.URL(url)
        self.conn = http.client.HTTPConnection(parts.host, parts.port)
        self.headers = {**headers, "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        return response.status, response.read()


def submit_to_done(base: str, headers: dict[str, str], n: int) -> list[float]:
    """Seconds from submit to a 200 status, polling without pause, one request at a time."""
    client, times = Lean(base, headers), []
    for _ in range(n):
        started = time.perf_counter()
        status_url = json.loads(client.call("POST", "/openfal/utils/echo", b'{"i": 1}')[1])["status_url"]
        path = httpx.URL(status_url).raw_path.decode()
        while client.call("GET", path)[0] != 200:
            pass
        times.append(time.perf_counter() - started)
    return times


def round_trips(url: str, n: int) -> list[float]:
    """Seconds per sequential GET of ``url`` with the same client: the bare baseline."""
    client, times = Lean(url, {}), []
    path = httpx.URL(url).raw_path.decode()
    for _ in range(n):
        started = time.perf_counter()
        client.call("GET", path)
        times.append(time.perf_counter() - started)
    return times


async def submit(client: httpx.AsyncClient, base: str, headers: dict[str, str], endpoint: str, body: dict[str, object]) -> str:
    response = await client.post(f"{base}/{endpoint}", json=body, headers=headers)
    response.raise_for_status()
    return str(response.json()["status_url"])


async def wait_for(client: httpx.AsyncClient, url: str, headers: dict[str, str], status: str) -> None:
    for _ in range(3000):
        if (await client.get(url, headers=headers)).json()["status"] == status:
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"{url} never reached {status}")


async def prepare(base: str, headers: dict[str, str]) -> dict[str, str]:
    """A COMPLETED echo, a long sleep IN_PROGRESS (one builtin slot) and one IN_QUEUE
    behind it, plus queued requests for the SSE streams."""
    async with httpx.AsyncClient(timeout=30) as client:
        done = await submit(client, base, headers, "openfal/utils/echo", {"i": 0})
        await wait_for(client, done, headers, "COMPLETED")
        running = await submit(client, base, headers, "openfal/utils/sleep", {"seconds": 600, "steps": 1})
        await wait_for(client, running, headers, "IN_PROGRESS")
        queued = await submit(client, base, headers, "openfal/utils/sleep", {"seconds": 1, "steps": 1})
        return {"completed": done, "queued": queued, "running": running}


async def cancel(urls: dict[str, str], headers: dict[str, str]) -> None:
    """End the sleeps, so the one builtin slot is free for the echo figures."""
    async with httpx.AsyncClient(timeout=30) as client:
        for name in urls.keys() & {"queued", "running"}:
            await client.put(urls[name].removesuffix("/status") + "/cancel", headers=headers)
            await wait_for(client, urls[name], headers, "COMPLETED")


async def open_streams(url: str, key: str, count: int) -> list[asyncio.StreamWriter]:
    """``count`` SSE status streams held open (their first event read)."""
    parts = httpx.URL(url)
    request = (
        f"GET {parts.raw_path.decode()}/stream HTTP/1.1\r\nHost: {parts.host}\r\nAuthorization: Key {key}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    writers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(parts.host, parts.port)
        writer.write(request)
        await reader.readuntil(b"data:")
        writers.append(writer)
    return writers


@contextmanager
def deployment(name: str, depth: int = 0, depth_keys: int = 1) -> Iterator[tuple[list[ServerProcess], str, dict[str, str]]]:
    """The processes of ``name``; with ``depth``, started on a queue that deep (env's
    ``DEEPEST`` names its deepest request)."""
    data = Path(tempfile.mkdtemp(prefix=f"openfal-bench-{name}-"))
    env = {"OPENFAL_DATA_DIR": str(data), "OPENFAL_CONCURRENCY": json.dumps({"builtin": 1})}
    db_name = None
    if name.startswith("pg"):
        db_name = asyncio.run(create_pg_database())
        env["OPENFAL_DATABASE_URL"] = pg_database_url(db_name)
    cli(env, "migrate")
    key = cli(env, "keys", "create", "--name", "bench").strip().splitlines()[-1]
    if depth:
        url = env.get("OPENFAL_DATABASE_URL") or f"sqlite+aiosqlite:///{data.resolve() / 'openfal.db'}"
        env["DEEPEST"], env["DEEPEST_KEY"] = fill_deployment(url, depth=depth, keys=depth_keys)
    processes: list[ServerProcess] = []
    try:
        api_count = 2 if name.endswith("2api") else 1
        for i in range(api_count):
            port = free_port()
            args = ["serve", "--port", str(port)] + (["--no-workers"] if api_count > 1 else [])
            processes.append(ServerProcess(args, env, port=port, log_path=data / f"api{i}.log"))
        if api_count > 1:
            processes.append(ServerProcess(["worker", "--backend", "builtin"], env, log_path=data / "worker.log"))
        for p in processes:
            if p.port:
                p.wait_healthy()
        yield [p for p in processes if p.port], key, env
    finally:
        for p in processes:
            p.stop()
        if db_name:
            asyncio.run(drop_pg_database(db_name))


Row = tuple[str, float, float, str, str]


def measure(name: str, args: argparse.Namespace) -> list[Row]:
    """(figure, openfal, bare baseline, unit, command) for one deployment."""
    rows: list[Row] = []
    with deployment(name) as (apis, key, _env):
        bares = [Bare() for _ in apis]
        try:
            for bare in bares:
                bare.wait()
            headers = {"Authorization": f"Key {key}"}
            urls = asyncio.run(prepare(apis[0].url, headers))

            def against_bare(figure: str, path_of: dict[str, str] | None, path: str = "", **extra: object) -> tuple[float, float]:
                """The figure's rate, beside the bare handler's measured just before it (the
                machine is shared: its load drifts); returns the CPU milliseconds per
                request of the API processes and of the bare ones."""
                bare_cpu = sum(cpu_seconds(b.proc.pid) for b in bares)
                baseline = wrk([wrk_command(b.url, args) for b in bares])[0]
                bare_cpu = (sum(cpu_seconds(b.proc.pid) for b in bares) - bare_cpu) * 1000 / (baseline * args.seconds)
                commands = []
                for api in apis:
                    url = api.url + (httpx.URL(path_of["url"]).raw_path.decode() if path_of else path)
                    commands.append(wrk_command(url, args, **extra))  # type: ignore[arg-type]
                cpu = sum(cpu_seconds(api.proc.pid) for api in apis)
                rate = wrk(commands)[0]
                cpu = sum(cpu_seconds(api.proc.pid) for api in apis) - cpu
                command = " & ".join(" ".join(c) for c in commands)
                if TIMEOUTS[0]:
                    command = f"({TIMEOUTS[0]} requests timed out) {command}"
                rows.append((figure, rate, baseline, "req/s", command))
                return cpu * 1000 / (rate * args.seconds), bare_cpu

            per_poll, bare_cpu = against_bare("status COMPLETED", {"url": urls["completed"]}, key=key)
            rows.append(("CPU per status poll", per_poll, bare_cpu, "ms", "CPU time of the API (bare) processes (/proc) / requests answered"))
            against_bare("status IN_QUEUE", {"url": urls["queued"]}, key=key)
            against_bare("status IN_PROGRESS", {"url": urls["running"]}, key=key)
            against_bare("GET /health", None, "/health")
            asyncio.run(cancel(urls, headers))
            rows.extend(latency_and_idle(apis, bares[0], key, args))
            script = Path(tempfile.mkdtemp()) / "submit.lua"
            script.write_text(SUBMIT_LUA)
            per_submit = against_bare("submits accepted", None, "/openfal/utils/echo", key=key, script=script)[0]
            rows.append(("API CPU per submit", per_submit, float("nan"), "ms", "API processes' CPU time (/proc) / submits accepted"))
            rows.append(("  = submits/s per API core", 1000 / per_submit, float("nan"), "req/s", "what one core would accept at that cost"))
        finally:
            for bare in bares:
                bare.stop()
    if args.depth:
        empty = {r[0]: r[1] for r in rows}
        rows.extend(measure_deep(name, args, empty_submits=empty["submits accepted"], empty_cpu=empty["API CPU per submit"]))
    return rows


def measure_deep(name: str, args: argparse.Namespace, *, empty_submits: float, empty_cpu: float) -> list[Row]:
    """The deep-queue figures of ``name`` (see the module docstring)."""
    depth, keys = args.depth, args.depth_keys
    rows: list[Row] = []
    with deployment(name, depth, keys) as (apis, key, env):
        bares = [Bare() for _ in apis]
        try:
            for bare in bares:
                bare.wait()
            deepest = f"/openfal/utils/requests/{env['DEEPEST']}/status"
            owner = env["DEEPEST_KEY"]  # its key's: another key's poll is a 404
            for api in apis:  # the first poll reads the queue once; later ones are answered from memory
                first = httpx.get(api.url + deepest, headers={"Authorization": f"Key {owner}"}, timeout=120).json()
            baseline = wrk([wrk_command(b.url, args) for b in bares])[0]
            rate = wrk([wrk_command(api.url + deepest, args, key=owner) for api in apis])[0]
            rows.append((f"status IN_QUEUE @{depth} queued", rate, baseline, "req/s", f"position {first.get('queue_position')}; bare handler as baseline"))
            script = Path(tempfile.mkdtemp()) / "submit.lua"
            script.write_text(SUBMIT_LUA)
            cpu = sum(cpu_seconds(api.proc.pid) for api in apis)
            rate = wrk([wrk_command(api.url + "/openfal/utils/echo", args, key=key, script=script) for api in apis])[0]
            per_submit = (sum(cpu_seconds(api.proc.pid) for api in apis) - cpu) * 1000 / (rate * args.seconds)
            rows.append((f"submits accepted @{depth} queued", rate, empty_submits, "req/s", "baseline: the same figure on an empty queue, above"))
            rows.append((f"API CPU per submit @{depth} queued", per_submit, empty_cpu, "ms", "baseline: the same figure on an empty queue, above"))
        finally:
            for bare in bares:
                bare.stop()
    db_name = None
    if name.startswith("pg"):
        db_name = asyncio.run(create_pg_database())
    try:
        at = {}
        for queued in (100, depth):
            target = pg_database_url(db_name) if db_name else f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/claims.db"
            at[queued] = asyncio.run(claim_p50(target, depth=queued, keys=keys)) * 1000
            if db_name:  # a fresh database for the next depth
                asyncio.run(drop_pg_database(db_name))
                db_name = asyncio.run(create_pg_database())
        command = f"200 sequential RequestStore.claim calls, {keys} keys, one request each (store-level, fresh database, change feed live)"
        rows.append((f"claim p50 @{depth} queued", at[depth], at[100], "ms", f"baseline: @100 queued; {command}"))
    finally:
        if db_name:
            asyncio.run(drop_pg_database(db_name))
    return rows


def latency_and_idle(apis: list[ServerProcess], bare: Bare, key: str, args: argparse.Namespace) -> list[Row]:
    headers = {"Authorization": f"Key {key}"}
    time.sleep(1)
    idle = core_share(apis[0].proc.pid, args.idle_seconds)
    submit_to_done(apis[0].url, headers, 20)  # warm up
    p50 = statistics.median(submit_to_done(apis[0].url, headers, args.n)) * 1000
    bare_p50 = statistics.median(round_trips(bare.url, args.n)) * 1000
    command = f"{args.n} sequential submits of openfal/utils/echo, each polled without pause until 200 (bare: one GET round trip)"
    rows: list[Row] = [
        ("submit->COMPLETED p50", p50, bare_p50, "ms", command),
        ("idle serve CPU", idle * 100, float("nan"), "% core", f"/proc/<pid>/stat over {args.idle_seconds:g} s, no clients"),
    ]
    if args.streams:

        async def streams() -> float:
            async with httpx.AsyncClient(timeout=30) as client:
                running = await submit(client, apis[0].url, headers, "openfal/utils/sleep", {"seconds": 600, "steps": 1})
                await wait_for(client, running, headers, "IN_PROGRESS")
            writers = await open_streams(running, key, args.streams)
            await asyncio.sleep(1.0)
            share = await asyncio.to_thread(core_share, apis[0].proc.pid, args.idle_seconds)
            for writer in writers:
                writer.close()
            await cancel({"running": running}, headers)
            return share

        share = asyncio.run(streams())
        rows.append(
            (f"{args.streams} idle SSE streams CPU", share * 100, float("nan"), "% core", f"/proc/<pid>/stat over {args.idle_seconds:g} s")
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="wrk duration per figure")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (one thread)")
    parser.add_argument("-n", type=int, default=200, help="sequential submits for submit->COMPLETED")
    parser.add_argument("--streams", type=int, default=1000, help="idle SSE streams to hold open (0: skip)")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--only", action="append", choices=["sqlite-1api", "pg-2api"])
    parser.add_argument("--depth", type=int, default=0, help="add the deep-queue figures at this many queued (e.g. 100000)")
    parser.add_argument("--depth-keys", type=int, default=100, help="keys the deep queue is spread over")
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server(args.bare_server)
        return
    names = args.only or ["sqlite-1api", "pg-2api"]
    print("command:", " ".join([".venv/bin/python", *sys.argv]))
    print(f"machine: {os.cpu_count()} cpus, shared; wrk on the same machine")
    for name in names:
        rows = measure(name, args)
        print(f"\n{name}")
        print(f"{'figure':<30} {'openfal':>10} {'bare':>10} {'ratio':>6}  unit     command")
        for figure, value, base, unit, command in rows:
            ratio = f"{value / base:>6.2f}" if base == base else f"{'':>6}"
            bare = (f"{base:>10.3f}" if unit == "ms" else f"{base:>10.0f}") if base == base else f"{'':>10}"
            shown = f"{value:>10.3f}" if unit == "ms" else f"{value:>10.1f}"
            print(f"{figure:<30} {shown} {bare} {ratio}  {unit:<8} {command}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
