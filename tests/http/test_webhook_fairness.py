"""Webhook delivery is fair between keys (N3: 100 never-answering receivers of one key
held every delivery slot and delayed another key's webhook by 66 s): a key's
deliveries take at most MAX_IN_FLIGHT_PER_KEY of the process's slots, so another key's
webhook is sent at once while the first key's receivers hang."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from openfal.webhooks import MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_KEY
from tests.support import App, Receiver, make_settings, running_app


class Silent:
    """A receiver on loopback that reads each request and never answers."""

    def __init__(self) -> None:
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            await asyncio.sleep(3600)
        writer.close()

    async def __aenter__(self) -> Silent:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(make_settings(tmp_path, webhook_timeout_seconds=60)) as running:
        yield running


async def test_one_keys_dead_receivers_do_not_delay_another_keys_webhook(app: App) -> None:
    hostile = {"Authorization": f"Key {await app.key('hostile')}"}
    customer = {"Authorization": f"Key {await app.key('customer')}"}
    good = Receiver()
    try:
        async with Silent() as silent:
            for _ in range(MAX_IN_FLIGHT * 2):
                response = await app.client.post(f"/openfal/utils/echo?fal_webhook={quote(silent.url)}", json={}, headers=hostile)
                assert response.status_code == 200
            deadline = time.monotonic() + 20
            while silent.requests < MAX_IN_FLIGHT_PER_KEY and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert silent.requests == MAX_IN_FLIGHT_PER_KEY  # the rest wait for those slots
            sent = time.monotonic()
            await app.client.post(f"/openfal/utils/echo?fal_webhook={quote(good.url)}", json={"i": 1}, headers=customer)
            while not good.received and time.monotonic() - sent < 10:
                await asyncio.sleep(0.05)
            assert good.received, "the other key's webhook waited for the dead receivers' timeouts"
            assert time.monotonic() - sent < 5
    finally:
        good.close()
