"""The status stream over a real server: every change arrives as it happens and the
stream closes with COMPLETED, woken by the change itself (the keep-alive interval is set
to ten minutes here, so a follower that missed its wake-up would hang past the test's
read timeout instead of being rescued by a periodic re-read)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, create_key, start_server


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("quiet")
    key = create_key(data_dir)
    server = start_server(data_dir, env={"OPENFAL_SSE_KEEPALIVE_SECONDS": "600"})
    server.key = key
    yield server
    server.process.stop()


def statuses(server: Server, body: dict, path: str = "/openfal/utils/sleep") -> list[dict]:
    auth = {"Authorization": f"Key {server.key}"}
    submitted = httpx.post(f"{server.url}{path}", json=body, headers=auth, timeout=10).json()
    seen = []
    with httpx.stream("GET", f"{submitted['status_url']}/stream?logs=1", headers=auth, timeout=httpx.Timeout(10, read=60)) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:]))
    return seen


def test_a_stream_opened_while_running_ends_with_completed(quiet: Server) -> None:
    seen = statuses(quiet, {"seconds": 1, "steps": 2})
    assert seen[-1]["status"] == "COMPLETED" and "error" not in seen[-1]
    assert [s["status"] for s in seen].count("COMPLETED") == 1


def test_a_cancelled_run_ends_the_stream_with_its_cancel(quiet: Server, tmp_path: Path) -> None:
    auth = {"Authorization": f"Key {quiet.key}"}
    submitted = httpx.post(f"{quiet.url}/openfal/utils/sleep", json={"seconds": 30, "steps": 60}, headers=auth, timeout=10).json()
    last = None
    with httpx.stream("GET", f"{submitted['status_url']}/stream", headers=auth, timeout=httpx.Timeout(10, read=60)) as response:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            last = json.loads(line[5:])
            if last["status"] == "IN_PROGRESS" and last.get("progress"):
                httpx.put(submitted["cancel_url"], headers=auth, timeout=10)
    assert last is not None and last["status"] == "COMPLETED" and last["error_type"] == "client_cancelled"
