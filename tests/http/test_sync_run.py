"""Synchronous runs (fal.run): ``POST /run/{endpoint}`` or a POST to a host listed in
``run_hosts`` waits in the same connection; a caller that hangs up cancels the request,
as fal does for dropped connections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn

from openfal.backends.builtin import BuiltinBackend
from openfal.http import create_app
from openfal.models import RequestRecord, Status
from openfal.runtime import Runtime
from tests.support import App, free_port, make_settings, running_app


async def test_a_post_to_a_run_host_answers_with_the_result(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path, run_hosts=("run.openfal.test",))) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        synchronous = await app.client.post("http://run.openfal.test/openfal/utils/echo", json={"a": 1}, headers=auth)
        queued = await app.client.post("http://openfal.test/openfal/utils/echo", json={"a": 1}, headers=auth)

    assert (synchronous.status_code, synchronous.json()) == (200, {"echo": {"a": 1}})
    assert queued.status_code == 200 and queued.json()["status"] == "IN_QUEUE"


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[Runtime, int]]:
    """The app behind a real uvicorn on loopback: only a real connection can be dropped."""
    settings = make_settings(tmp_path)
    runtime = Runtime(settings, backends={"builtin": BuiltinBackend()})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, runtime=runtime), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        yield runtime, port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def only_request(runtime: Runtime, status: Status, timeout: float = 20.0) -> RequestRecord:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        history = await runtime.requests.history(None, limit=5, before_seq=None)
        if history and history[0].status is status:
            assert len(history) == 1
            return history[0]
        assert loop.time() < deadline, f"no request reached {status}: {history}"
        await asyncio.sleep(0.05)


async def test_a_run_whose_caller_hangs_up_is_cancelled(tmp_path: Path) -> None:
    async with served(tmp_path) as (runtime, port):
        _, secret = await runtime.keys.create("caller")
        body = json.dumps({"seconds": 60, "steps": 600}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /run/openfal/utils/sleep HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: Key {secret}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        running = await only_request(runtime, Status.IN_PROGRESS)
        writer.close()
        await writer.wait_closed()

        done = await only_request(runtime, Status.COMPLETED)

    assert done.id == running.id
    assert (done.result_status, done.error_type) == (499, "client_cancelled")


async def test_a_run_on_the_queue_path_is_not_a_sync_run_without_run_hosts(app: App) -> None:
    """Without ``run_hosts`` every host queues (only ``/run/...`` is synchronous)."""
    auth = {"Authorization": f"Key {await app.key()}"}
    response = await app.client.post("http://run.openfal.test/openfal/utils/echo", json={}, headers=auth)
    assert response.json()["status"] == "IN_QUEUE"
