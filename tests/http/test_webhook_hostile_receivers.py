"""Webhook receivers that misbehave on purpose: an answer of hundreds of megabytes, an
answer that never ends, a byte at a time, no answer at all, a redirect to ``data:``.
None of them may grow the server's memory, hold up another receiver's webhook, or keep
a delivery retrying past the cap.

The receivers are raw asyncio servers on loopback, so they can break HTTP in ways a
real HTTP server library would not let them; each counts what it managed to send."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from openfal.config import Settings
from openfal.runtime import Runtime
from openfal.store import outbox
from openfal.store.schema import webhooks
from openfal.webhooks import ANSWER_PREFIX_BYTES, WebhookDeliverer
from tests.support import App, Receiver, create_pg_database, drop_pg_database, make_settings, pg_database_url, running_app

#: what the loopback socket buffers of both ends may hold once the reader stops
#: reading (tcp_wmem + tcp_rmem maxima are a few MB each); far below the 400 MB sent
SOCKET_BUFFERS = 32 * 1024 * 1024
CHUNK = b"x" * 65536

Configure = Callable[..., Settings]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def configure(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Configure]:
    """Settings for an app on SQLite or on a fresh PostgreSQL database (where deliveries
    are claimed with SKIP LOCKED), auth off, with the given overrides."""
    name = await create_pg_database() if request.param == "postgresql" else None

    def make(**overrides: Any) -> Settings:
        if name is not None:
            overrides["database_url"] = pg_database_url(name)
        return make_settings(tmp_path, auth_enabled=False, **overrides)

    try:
        yield make
    finally:
        if name is not None:
            await drop_pg_database(name)


class HostileReceiver:
    """A TCP server on 127.0.0.1 that reads a request's head and body, then lets
    ``answer(writer)`` do what it likes. ``sent`` counts the bytes the kernel accepted;
    ``connected`` is set once a request has been read; ``hung_up`` once a write failed
    because the client closed the connection."""

    def __init__(self, answer: Callable[[HostileReceiver, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.answer = answer
        self.sent = 0
        self.requests = 0
        self.connected = asyncio.Event()
        self.hung_up = asyncio.Event()
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> HostileReceiver:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self.server is not None
        self.server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
            )
            await reader.readexactly(length)
            self.requests += 1
            self.connected.set()
            await self.answer(self, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.hung_up.set()
        except asyncio.CancelledError:
            pass  # closed by __aexit__: end quietly (asyncio logs a cancelled handler's traceback)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def endless_body(receiver: HostileReceiver, writer: asyncio.StreamWriter) -> None:
    while True:
        await receiver.write(writer, CHUNK)


async def answer_400_mb(receiver: HostileReceiver, writer: asyncio.StreamWriter) -> None:
    await receiver.write(writer, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 400000000\r\n\r\n")
    for _ in range(400_000_000 // len(CHUNK)):
        await receiver.write(writer, CHUNK)


async def endless_error(receiver: HostileReceiver, writer: asyncio.StreamWriter) -> None:
    await receiver.write(writer, b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n")
    await endless_body(receiver, writer)


async def endless_head(receiver: HostileReceiver, writer: asyncio.StreamWriter) -> None:
    """A status line, then one header that never ends (the head is never complete)."""
    await receiver.write(writer, b"HTTP/1.1 200 OK\r\nX-Endless: ")
    await endless_body(receiver, writer)


async def trickle_head(receiver: HostileReceiver, writer: asyncio.StreamWriter) -> None:
    """A status line, then a header one byte at a time, each well within any read timeout."""
    await receiver.write(writer, b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while True:
        await asyncio.sleep(0.2)
        await receiver.write(writer, b"a")


async def never_answer(receiver: HostileReceiver, writer: asyncio.StreamWriter) -> None:
    await receiver.release.wait()


async def redirect_to_data(receiver: HostileReceiver, writer: asyncio.StreamWriter) -> None:
    await receiver.write(writer, b"HTTP/1.1 302 Found\r\nLocation: data:text/plain,hi\r\nContent-Length: 0\r\n\r\n")


async def _submit(app: App, url: str) -> str:
    response = await app.client.post(f"/openfal/utils/echo?fal_webhook={quote(url)}", json={})
    assert response.status_code == 200, response.text
    return str(response.json()["request_id"])


async def _row_in_state(app: App, request_id: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
    """The outbox row once it reaches ``state`` (bounded, so a regression fails instead of hanging)."""
    deadline = time.monotonic() + timeout
    while not (rows := await app.runtime.outbox.for_request(request_id)) or rows[0]["state"] != state:
        assert time.monotonic() < deadline, f"outbox row never reached {state!r}: {rows}"
        await asyncio.sleep(0.05)
    return rows[0]


async def _wait(event: asyncio.Event, timeout: float = 30.0) -> None:
    await asyncio.wait_for(event.wait(), timeout)


async def test_a_400_mb_answer_is_not_read(configure: Configure) -> None:
    """A 2xx answer is a delivery as soon as its status arrives; its 400 MB body is not
    read: the connection is closed and the receiver's writes stop being accepted once
    the socket buffers are full. (Before, the whole answer was read into memory.)"""
    settings = configure(webhook_timeout_seconds=120)
    async with HostileReceiver(answer_400_mb) as receiver, running_app(settings) as app:
        request_id = await _submit(app, receiver.url)
        row = await _row_in_state(app, request_id, "delivered")
        assert row["last_status"] == 200
        await _wait(receiver.hung_up)
        assert receiver.sent < SOCKET_BUFFERS


async def test_an_endless_error_answer_is_read_only_a_few_kb(configure: Configure) -> None:
    """A non-2xx answer that never ends fails the attempt after its first few KB (kept,
    cut short, as the delivery's last error), long before the attempt's deadline."""
    settings = configure(webhook_timeout_seconds=120, webhook_max_attempts=1)
    async with HostileReceiver(endless_error) as receiver, running_app(settings) as app:
        request_id = await _submit(app, receiver.url)
        row = await _row_in_state(app, request_id, "failed")
        assert row["last_status"] == 500
        assert row["last_error"].startswith("HTTP 500: xxx")
        assert len(row["last_error"]) < ANSWER_PREFIX_BYTES
        await _wait(receiver.hung_up)
        assert receiver.sent < SOCKET_BUFFERS


async def test_an_answer_head_that_never_ends_is_a_failed_attempt(configure: Configure) -> None:
    """Headers without end are cut off by the HTTP parser's bound on an incomplete head
    (about 100 KB): a failed attempt, long before the deadline, the rest never read."""
    settings = configure(webhook_timeout_seconds=120, webhook_max_attempts=1)
    async with HostileReceiver(endless_head) as receiver, running_app(settings) as app:
        request_id = await _submit(app, receiver.url)
        row = await _row_in_state(app, request_id, "failed")
        assert row["last_status"] is None and "RemoteProtocolError" in row["last_error"]
        await _wait(receiver.hung_up)
        assert receiver.sent < SOCKET_BUFFERS


async def test_a_receiver_trickling_bytes_fails_at_the_attempt_deadline(configure: Configure) -> None:
    """A byte every 0.2 s never trips a per-read timeout; the attempt's total deadline
    (connect + send + answer, webhook_timeout_seconds) ends it, as a failed attempt."""
    settings = configure(webhook_timeout_seconds=1.0, webhook_max_attempts=1)
    async with HostileReceiver(trickle_head) as receiver, running_app(settings) as app:
        request_id = await _submit(app, receiver.url)
        row = await _row_in_state(app, request_id, "failed")
        assert row["last_status"] is None
        assert "deadline" in row["last_error"]
        await _wait(receiver.hung_up)


async def test_a_receiver_that_never_answers_fails_at_the_attempt_deadline(configure: Configure) -> None:
    """Accepting the connection and the request, then saying nothing, is a failed
    attempt at the deadline, retried up to the cap."""
    settings = configure(webhook_timeout_seconds=0.5, webhook_max_attempts=2)
    async with HostileReceiver(never_answer) as receiver, running_app(settings) as app:
        request_id = await _submit(app, receiver.url)
        row = await _row_in_state(app, request_id, "failed")
        assert row["attempts"] == 2 and receiver.requests == 2
        assert "deadline" in row["last_error"]


async def test_a_slow_receiver_does_not_delay_another_receivers_webhook(configure: Configure) -> None:
    """While one receiver holds its delivery open, a webhook enqueued after it, to
    another receiver, is delivered (deliveries are independent, not one batch)."""
    settings = configure(webhook_timeout_seconds=120)
    fast = Receiver()
    try:
        async with HostileReceiver(never_answer) as slow, running_app(settings) as app:
            slow_id = await _submit(app, slow.url)
            await _wait(slow.connected)
            fast_id = await _submit(app, fast.url)
            await _row_in_state(app, fast_id, "delivered")
            assert len(fast.received) == 1
            assert not slow.release.is_set() and not slow.hung_up.is_set()
            assert (await app.runtime.outbox.for_request(slow_id))[0]["state"] == "pending"
            slow.release.set()  # so stopping the app need not wait out the slow attempt
    finally:
        fast.close()


async def test_a_redirect_to_data_is_a_failed_attempt_counted_toward_the_cap(configure: Configure) -> None:
    """`302 Location: data:...` is not followed: each one is a failed attempt with the
    3xx recorded, and the delivery fails for good at webhook_max_attempts."""
    settings = configure(webhook_max_attempts=2)
    async with HostileReceiver(redirect_to_data) as receiver, running_app(settings) as app:
        request_id = await _submit(app, receiver.url)
        row = await _row_in_state(app, request_id, "failed")
        assert (row["attempts"], row["last_status"], receiver.requests) == (2, 302, 2)
        assert "redirect" in row["last_error"] and "data:text/plain,hi" in row["last_error"]


async def test_webhooks_do_not_follow_redirects(configure: Configure) -> None:
    """A receiver redirecting to another http URL fails the attempt; the target never
    gets the webhook (a redirect could otherwise aim the signed POST anywhere)."""
    target = Receiver()

    async def redirect(receiver: HostileReceiver, writer: asyncio.StreamWriter) -> None:
        await receiver.write(writer, f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {target.url}\r\nContent-Length: 0\r\n\r\n".encode())

    try:
        settings = configure(webhook_max_attempts=1)
        async with HostileReceiver(redirect) as receiver, running_app(settings) as app:
            request_id = await _submit(app, receiver.url)
            row = await _row_in_state(app, request_id, "failed")
            assert row["last_status"] == 307
            assert target.received == []
    finally:
        target.close()


async def test_an_unusable_url_already_in_the_outbox_fails_instead_of_looping(configure: Configure) -> None:
    """A row whose URL httpx cannot use (written before submit checked URLs this way)
    is a failed delivery, not an exception retried forever."""
    async with running_app(configure()) as app:
        for n, url in enumerate(["http://☃.com/", "http://xn--n3h.com/"]):
            async with app.runtime.requests.transaction() as tx:
                await outbox.enqueue(tx, request_id=f"old-{n}", url=url, body="{}")
            row = await _row_in_state(app, f"old-{n}", "failed")
            assert row["attempts"] == 1 and "cannot be used" in row["last_error"]


async def test_any_exception_in_an_attempt_counts_toward_the_retry_cap(configure: Configure) -> None:
    """Whatever an attempt raises is a failed attempt: here the client's transport
    raises a plain RuntimeError (a fault injected on purpose: no real receiver can make
    httpx raise an arbitrary exception). The delivery fails for good at the cap."""

    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug in delivery")

    settings = configure(webhook_max_attempts=3)
    runtime = Runtime(settings)
    await runtime.start(workers=False)  # no deliverer of its own: this test drives one
    deliverer = WebhookDeliverer(
        settings=settings,
        outbox=runtime.outbox,
        requests=runtime.requests,
        signer=runtime.signer,
        client=httpx.AsyncClient(transport=httpx.MockTransport(broken)),
    )
    try:
        async with runtime.requests.transaction() as tx:
            await outbox.enqueue(tx, request_id="bug", url="http://receiver.example/hook", body="{}")
        for attempt in range(1, 4):
            (delivery,) = await runtime.outbox.claim_due(limit=1, lock_seconds=60)
            assert delivery.attempts == attempt
            await deliverer.deliver(delivery)
            async with runtime.db.write() as conn:  # make the retry due now
                await conn.execute(webhooks.update().values(next_attempt_at=0))
        row = (await runtime.outbox.for_request("bug"))[0]
        assert (row["state"], row["attempts"]) == ("failed", 3)
        assert "RuntimeError: a bug in delivery" in row["last_error"]
    finally:
        await deliverer.close()
        await runtime.stop()
