"""What the newer client calls cost, against the synchronous run they build on.

One ``openfal serve`` (SQLite, in-process workers, key auth) on loopback; each call
runs ``openfal/utils/echo`` (a no-op, so only the queue and the transport are
measured), sequentially, with the official fal-client 1.0.3 where it has the call:

  run        ``fal_client.run``: POST /run/{endpoint}, the baseline
  stream     ``fal_client.stream``: POST /run/{endpoint}/stream (SSE, one event)
  realtime   one message on an open ``fal_client.realtime`` connection (msgpack)
  run-httpx  POST /run/{endpoint} with plain httpx, the baseline for:
  proxy      POST /fal/proxy with ``x-fal-target-url: https://fal.run/...`` (httpx,
             as the JS client's proxy mode sends it)

Every figure is printed with the run baseline measured in the same process and run,
and the ratio to it.

    .venv/bin/python benchmarks/client_calls.py [--calls 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fal_client  # noqa: E402
import fal_client.client as fal_module  # noqa: E402

from tests.e2e.conftest import create_key, start_server  # noqa: E402

ECHO = "openfal/utils/echo"


def timed(calls: int, call: Callable[[int], object]) -> list[float]:
    for i in range(min(10, calls)):  # warm-up: connections, caches
        call(i)
    samples = []
    for i in range(calls):
        start = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        key = create_key(data_dir)
        server = start_server(data_dir)
        try:
            fal_module.RUN_URL_FORMAT = server.url + "/run/"
            fal_module.REST_URL = server.url
            fal_module.REALTIME_URL_FORMAT = server.url.replace("http://", "ws://") + "/"
            client = fal_client.SyncClient(key=key)
            http = httpx.Client(headers={"Authorization": f"Key {key}"}, timeout=30)
            results: dict[str, list[float]] = {}
            results["run"] = timed(args.calls, lambda i: client.run(ECHO, {"i": i}))
            results["stream"] = timed(args.calls, lambda i: list(client.stream(ECHO, {"i": i})))
            with client.realtime(ECHO) as connection:

                def message(i: int) -> object:
                    connection.send({"i": i})
                    return connection.recv()

                results["realtime"] = timed(args.calls, message)
            results["run-httpx"] = timed(args.calls, lambda i: http.post(f"{server.url}/run/{ECHO}", json={"i": i}).raise_for_status())
            target = {"x-fal-target-url": f"https://fal.run/{ECHO}"}
            results["proxy"] = timed(args.calls, lambda i: http.post(f"{server.url}/fal/proxy", json={"i": i}, headers=target).raise_for_status())
        finally:
            server.process.stop()
    base = statistics.median(results["run"])
    print(f"{'call':<10} {'median ms':>10} {'p95 ms':>8} {'vs run':>7}   ({args.calls} sequential echo calls each)")
    for name, samples in results.items():
        median = statistics.median(samples)
        p95 = statistics.quantiles(samples, n=20)[-1]
        print(f"{name:<10} {median * 1000:>10.2f} {p95 * 1000:>8.2f} {median / base:>6.2f}x")


if __name__ == "__main__":
    main()
