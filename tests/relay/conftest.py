"""Relay test helpers: a real upstream openfal process, a scriptable misbehaving
upstream on loopback, and an in-process relaying openfal."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from openfal.backends.builtin import BuiltinBackend
from openfal.backends.relay import make_relay_backends
from openfal.http import create_app
from openfal.runtime import Runtime
from tests.e2e.conftest import Server, create_key, start_server
from tests.support import App, make_settings, wait_status

#: fast knobs for tests: short polls, short cool-downs
FAST = {
    "poll_interval": 0.05,
    "poll_max_interval": 0.2,
    "cooldown": 0.05,
    "cooldown_max": 0.2,
    "submit_wait_max": 0.5,
    "http_timeout": 5.0,
    "max_poll_failures": 3,
    "concurrency": 4,
}


# -- the real upstream --------------------------------------------------------------------


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``openfal serve --demo`` with auth on and a key made by the CLI; two
    builtin slots, so a third sleep request queues there."""
    data_dir = tmp_path_factory.mktemp("upstream")
    key = create_key(data_dir, "relay")
    server = start_server(data_dir, "--demo", env={"OPENFAL_CONCURRENCY": json.dumps({"builtin": 2, "local": 1})})
    server.key = key
    yield server
    server.process.stop()


# -- the relaying openfal, in process -----------------------------------------------------


@asynccontextmanager
async def relay_app(data_dir: Path, upstream: dict[str, Any], routes: dict[str, str] | None = None, **overrides: Any) -> AsyncIterator[App]:
    """openfal with the builtin backend and one relay backend ``up``, served in process
    through ``create_app``'s own wiring (its relay webhook route included). The local
    backend is left out: no relay test routes to it, and it would import torch."""
    settings = make_settings(
        data_dir,
        upstreams={"up": {**FAST, **upstream}},
        routes=routes if routes is not None else {"openfal/utils/*": "up", "acme/*": "up"},
        **overrides,
    )
    backends = {"builtin": BuiltinBackend(), **make_relay_backends(settings, existing={"builtin"})}
    runtime = Runtime(settings, backends=backends)
    app = create_app(settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://openfal.test") as client:
            yield App(runtime, client)


@dataclass
class Relayed:
    """One request sent through the relay and waited for."""

    app: App
    auth: dict[str, str]
    submitted: dict[str, Any]
    status: dict[str, Any]
    result: httpx.Response

    @property
    def id(self) -> str:
        return self.submitted["request_id"]

    async def logs(self) -> list[str]:
        response = await self.app.client.get(self.submitted["status_url"], params={"logs": 1}, headers=self.auth)
        return [entry["message"] for entry in response.json()["logs"]]

    async def record(self) -> Any:
        return await self.app.runtime.requests.get(self.id)


async def submit(app: App, path: str, body: Any) -> tuple[dict[str, str], dict[str, Any]]:
    auth = {"Authorization": f"Key {await app.key()}"}
    submitted = await app.client.post(path, json=body, headers=auth)
    assert submitted.status_code == 200, submitted.text
    return auth, submitted.json()


async def finish(app: App, auth: dict[str, str], submitted: dict[str, Any], *, timeout: float = 20.0) -> Relayed:
    done = await wait_status(app.client, submitted["status_url"], auth, timeout=timeout)
    assert done.status_code == 200, done.text
    result = await app.client.get(submitted["response_url"], headers=auth)
    return Relayed(app, auth, submitted, done.json(), result)


async def run_relayed(app: App, path: str, body: Any, *, timeout: float = 20.0) -> Relayed:
    """Submit through the relay and wait for COMPLETED."""
    auth, submitted = await submit(app, path, body)
    return await finish(app, auth, submitted, timeout=timeout)


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


# -- a scriptable fake upstream ------------------------------------------------------------

Reply = tuple[int, Any]  # (status, JSON-able body | bytes); bytes are sent raw


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> str:
        return self.headers.get("authorization", "")


@dataclass
class FakeRequest:
    id: str
    endpoint: str
    input: Any
    key: str
    polls: int = 0
    cancelled: bool = False


@dataclass
class FakeUpstream:
    """A fal-shaped queue on loopback whose every answer can be scripted.

    It stands in for an upstream because no real one can misbehave on demand: fal.ai is
    not reachable offline, and a real openfal does not answer 429, 410, malformed JSON
    or a slow status when asked. The relay's well-behaved paths run against a real
    openfal process instead (``upstream``, test_relay_openfal.py).

    Unscripted, a submit is accepted; its status goes IN_QUEUE (position 1), then
    IN_PROGRESS with one more log line per poll, then COMPLETED after
    ``polls_until_done`` polls; the result is ``result`` (a dict or a function of the
    request). Scripted replies (``submit_replies`` ...) are used first, one per call;
    a reply may be ``("sleep", seconds, reply)``.
    """

    polls_until_done: int = 3
    result: Any = field(default_factory=lambda: {"ok": True})
    completed_error: tuple[str, str] | None = None  # (error, error_type) on COMPLETED
    submit_replies: list[Any] = field(default_factory=list)
    status_replies: list[Any] = field(default_factory=list)
    result_replies: list[Any] = field(default_factory=list)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    requests: dict[str, FakeRequest] = field(default_factory=dict)
    hold: threading.Event = field(default_factory=threading.Event)  # set: IN_PROGRESS polls do not advance

    def __post_init__(self) -> None:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                call = Call(self.command, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()}, body)
                fake.calls.append(call)
                reply = fake.answer(call)
                while isinstance(reply, tuple) and reply[0] == "sleep":
                    time.sleep(reply[1])
                    reply = reply[2]
                status, payload = reply[0], reply[1]
                if isinstance(payload, bytes | bytearray):
                    data, kind = bytes(payload), "application/octet-stream"
                    if isinstance(reply, tuple) and len(reply) == 3:
                        kind = reply[2]
                else:
                    data, kind = json.dumps(payload).encode(), "application/json"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = _handle  # noqa: N815 - http.server's naming

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # what the relay did
    def of(self, method: str, suffix: str = "") -> list[Call]:
        return [c for c in self.calls if c.method == method and c.path.endswith(suffix) and not c.path.startswith("/media/")]

    @property
    def submits(self) -> list[Call]:
        return [c for c in self.calls if c.method == "POST"]

    @property
    def accepted(self) -> int:
        return len(self.requests)

    # how it answers
    def answer(self, call: Call) -> Any:
        path = call.path
        if call.method == "GET" and path.startswith("/media/"):
            if path in self.files:
                data, kind = self.files[path]
                return (200, data, kind)
            return (404, {"detail": "Not found"})
        if call.method == "POST":
            if self.submit_replies:
                return self.submit_replies.pop(0)
            return self._accept(call)
        rid = path.split("/requests/", 1)[1].split("/")[0] if "/requests/" in path else None
        request = self.requests.get(rid or "")
        if request is None:
            return (404, {"detail": f"Request {rid} not found"})
        if call.method == "PUT" and path.endswith("/cancel"):
            request.cancelled = True
            return (202, {"status": "CANCELLATION_REQUESTED"})
        if path.endswith("/status"):
            if self.status_replies:
                return self.status_replies.pop(0)
            return self._status(request)
        if self.result_replies:
            return self.result_replies.pop(0)
        if request.cancelled:
            return (499, {"detail": "Request cancelled by the client.", "error_type": "client_cancelled"})
        result = self.result(request) if callable(self.result) else self.result
        return result if isinstance(result, tuple) else (200, result)

    def _accept(self, call: Call) -> Reply:
        rid = str(uuid.uuid4())
        endpoint = call.path.strip("/")
        self.requests[rid] = FakeRequest(rid, endpoint, json.loads(call.body or b"null"), call.key)
        app = "/".join(endpoint.split("/")[:2])
        base = f"{self.url}/{app}/requests/{rid}"
        return (200, {"status": "IN_QUEUE", "request_id": rid, "response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel", "queue_position": 1})

    def _status(self, request: FakeRequest) -> Reply:
        if not (self.hold.is_set() and request.polls >= 2 and not request.cancelled):
            request.polls += 1
        polls = request.polls
        logs = [{"message": f"line {i}", "level": "INFO", "source": "USER", "timestamp": f"2025-01-01T00:00:0{i % 10}.000Z"} for i in range(1, polls)]
        if request.cancelled or polls > self.polls_until_done:
            body: dict[str, Any] = {"status": "COMPLETED", "logs": logs, "metrics": {"inference_time": 0.1}}
            if request.cancelled:
                body.update(error="Request cancelled by the client.", error_type="client_cancelled")
            elif self.completed_error:
                body.update(error=self.completed_error[0], error_type=self.completed_error[1])
            return (200, body)
        if polls == 1:
            return (202, {"status": "IN_QUEUE", "queue_position": 1})
        return (202, {"status": "IN_PROGRESS", "logs": logs})


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    yield upstream
    upstream.close()
