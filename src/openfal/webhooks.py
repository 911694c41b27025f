"""Webhook delivery: fal's payload, signed with ED25519 the way fal signs, delivered
from the persisted outbox with exponential backoff (10 attempts over about 2 hours by
default). Delivery runs in tasks of its own and never blocks a worker; each delivery is
independent of the others, each attempt has one deadline and reads at most a few KB of
the receiver's answer, and every failure of an attempt counts toward the cap.

Signature: headers ``X-Fal-Webhook-Request-Id``, ``X-Fal-Webhook-User-Id``,
``X-Fal-Webhook-Timestamp`` (unix seconds) and ``X-Fal-Webhook-Signature`` (hex), over
``request_id \\n user_id \\n timestamp \\n sha256_hex(body)``. The public key is
published as a JWKS at ``/.well-known/jwks.json`` (``keys[].x`` base64url), so
receivers written for fal verify openfal's webhooks by changing only the JWKS URL.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import time
from functools import partial
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from openfal import metrics
from openfal.aio import wait_event
from openfal.backoff import Backoff
from openfal.config import Settings
from openfal.fetch import AddressRefused, make_client
from openfal.store import secrets
from openfal.store.db import Database
from openfal.store.outbox import Delivery, OutboxStore
from openfal.store.requests import RequestStore

log = logging.getLogger("openfal.webhooks")

SIGNING_KEY_NAME = "webhook_ed25519"
#: deliveries attempted at once by one process; more are claimed as these end
MAX_IN_FLIGHT = 20
#: one API key's deliveries in flight at once in a process (the rest of the slots stay
#: for other keys: so a key's dead receivers delay another key's webhook by no timeout)
MAX_IN_FLIGHT_PER_KEY = 4
POLL_SECONDS = 1.0
#: a deliverer with nothing pending looks again after this long unless woken
IDLE_SECONDS = 10.0
#: the most of a receiver's answer read (only of a non-2xx one, for the delivery log)
ANSWER_PREFIX_BYTES = 4096
#: how much of that answer the delivery's last_error keeps
ERROR_ANSWER_CHARS = 500
MAX_URL_CHARS = 2048
#: a DNS name (letters, digits, hyphens, underscores, dots) or an IP address (IPv6 without brackets)
_HOST = re.compile(r"[A-Za-z0-9_.-]+|[0-9A-Fa-f:.]+")


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        raw = private_key.public_key().public_bytes_raw()
        self.public_raw = raw
        self.kid = hashlib.sha256(raw).hexdigest()[:16]

    @classmethod
    async def load(cls, db: Database) -> Signer:
        """The deployment's signing key, created on first use and shared through the DB."""
        encoded = await secrets.get_or_create(
            db, SIGNING_KEY_NAME, lambda: base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()
        )
        return cls(Ed25519PrivateKey.from_private_bytes(base64.b64decode(encoded)))

    def headers(self, request_id: str, user_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        timestamp = int(time.time()) if timestamp is None else timestamp
        message = f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": user_id,
            "X-Fal-Webhook-Timestamp": str(timestamp),
            "X-Fal-Webhook-Signature": self.private_key.sign(message).hex(),
        }

    def jwks(self) -> dict[str, Any]:
        x = base64.urlsafe_b64encode(self.public_raw).rstrip(b"=").decode()
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "use": "sig", "alg": "EdDSA"}]}


def verify(jwks: dict[str, Any], headers: dict[str, str], body: bytes, *, tolerance: float = 300) -> bool:
    """What a receiver does: check the timestamp window and the signature with any key."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get("x-fal-webhook-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    message = "\n".join(
        [lower.get("x-fal-webhook-request-id", ""), lower.get("x-fal-webhook-user-id", ""), timestamp, hashlib.sha256(body).hexdigest()]
    ).encode()
    for key in jwks.get("keys", []):
        raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(bytes.fromhex(lower.get("x-fal-webhook-signature", "")), message)
            return True
        except Exception:
            continue
    return False


#: the spread of each wait between attempts, ±20 %
RETRY_JITTER = 0.2


def retry_at(attempts: int, settings: Settings, now: float) -> float | None:
    """When a delivery that has failed ``attempts`` times is tried again: exponential
    backoff with jitter (15 s, 30 s, 1 min ... capped at 40 min), or None once
    ``webhook_max_attempts`` are spent."""
    if attempts >= settings.webhook_max_attempts:
        return None
    backoff = Backoff(settings.webhook_base_delay_seconds, settings.webhook_max_delay_seconds, jitter=RETRY_JITTER)
    return now + backoff.delay(max(0, attempts - 1))


def check_url(value: str) -> httpx.URL:
    """``value`` as the deliverer's client will send to it, or ``ValueError`` saying why
    it never could: httpx's own parse (which IDNA-encodes the host), http or https, a
    host that is a DNS name or an IP address, a real port, at most MAX_URL_CHARS.
    Submit checks ``fal_webhook`` with this, so an unusable URL is refused at once
    instead of failing at every delivery attempt."""
    if len(value) > MAX_URL_CHARS:
        raise ValueError(f"longer than {MAX_URL_CHARS} characters")
    try:
        url = httpx.URL(value)
        url.raw_host.decode("ascii")
        _ = url.host  # decodes an A-label (xn--...), as httpx does when sending
        port = url.port
    except Exception as exc:  # InvalidURL, idna's errors, UnicodeError: all "unusable"
        raise ValueError(str(exc) or type(exc).__name__) from None
    if url.scheme not in {"http", "https"}:
        raise ValueError("an absolute http(s) URL is expected")
    host = url.raw_host.decode("ascii")
    if not host or not _HOST.fullmatch(host):
        raise ValueError("the URL has no usable host")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"no such port: {port}")
    return url


class Redirected(Exception):
    """The receiver answered a redirect, which webhooks do not follow (following it
    would aim a signed POST at whatever URL the receiver names, ``data:`` included)."""

    def __init__(self, status: int, location: str) -> None:
        super().__init__(f"HTTP {status}: redirects are not followed (Location: {location[:200]})")
        self.status = status


async def _refuse_redirects(response: httpx.Response) -> None:
    """A response hook: runs before httpx looks at ``Location`` at all, so a receiver's
    redirect is one failed attempt with its status, whatever the header holds."""
    if 300 <= response.status_code < 400:
        raise Redirected(response.status_code, response.headers.get("location", ""))


async def _prefix(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of an answer, raw (not decompressed, so a small gzip
    bomb stays small); the rest is never read: closing the response drops it."""
    buffer = bytearray()
    async for chunk in response.aiter_raw():
        buffer += chunk
        if len(buffer) >= limit:
            break
    return bytes(buffer[:limit])


class WebhookDeliverer:
    """Claims due deliveries and runs each in its own task, at most MAX_IN_FLIGHT at a
    time and MAX_IN_FLIGHT_PER_KEY of one API key's, claiming more as tasks end: one
    receiver that is slow (or hostile) holds one slot for at most its attempt's
    deadline, and one key's dead receivers, however many, leave the other slots to
    other keys, whose webhooks then wait for no one's timeout."""

    def __init__(
        self,
        *,
        settings: Settings,
        outbox: OutboxStore,
        requests: RequestStore,
        signer: Signer,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.requests = requests
        self.signer = signer
        #: guarded at connect time: private addresses only with allow_private_urls
        self.client = client or make_client(settings)
        self.client.event_hooks = {**self.client.event_hooks, "response": [*self.client.event_hooks["response"], _refuse_redirects]}
        #: set on enqueue (Endings), when a delivery ends, and by stop()
        self.wake = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()

    async def run(self) -> None:
        """Deliver until ``stop()``, which lets the deliveries in flight finish (the
        runtime cancels what outlasts its grace; those rows are claimed again once
        their lock lapses)."""
        in_flight: set[asyncio.Task[None]] = set()
        #: deliveries in flight per key
        busy: dict[str, int] = {}

        def ended(key: str, task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            busy[key] -= 1
            if not busy[key]:
                del busy[key]
            self.wake.set()

        try:
            while not self._stop.is_set():
                self.wake.clear()  # before claiming: a wake-up from here on is not lost
                free = MAX_IN_FLIGHT - len(in_flight)
                wait = POLL_SECONDS
                if free > 0:
                    due_in = await self._due_in()
                    if due_in <= 0:
                        for delivery in await self._claim(free, busy):
                            task = asyncio.create_task(self._attempt(delivery), name=f"webhook-{delivery.id}")
                            in_flight.add(task)
                            busy[delivery.key] = busy.get(delivery.key, 0) + 1
                            task.add_done_callback(partial(ended, delivery.key))
                    else:
                        wait = due_in
                await wait_event(self.wake, wait)
            if in_flight:
                await asyncio.wait(set(in_flight))
        finally:
            for task in list(in_flight):
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _due_in(self) -> float:
        """Seconds until the next delivery may be claimed (0: now), at most
        ``IDLE_SECONDS``: an idle deliverer reads when it is woken (a delivery was
        queued, here or, through the change feed, elsewhere) or at that limit."""
        try:
            due = await self.outbox.next_due()
        except Exception:
            log.exception("reading the webhook outbox failed")
            return POLL_SECONDS
        return IDLE_SECONDS if due is None else min(max(due - time.time(), 0.0), IDLE_SECONDS)

    async def _claim(self, limit: int, busy: dict[str, int]) -> list[Delivery]:
        try:
            # the lock outlasts an attempt's deadline, so no other process claims it meanwhile
            lock = self.settings.webhook_timeout_seconds * 4
            return await self.outbox.claim_due(limit=limit, lock_seconds=lock, per_key=MAX_IN_FLIGHT_PER_KEY, busy=dict(busy))
        except Exception:
            log.exception("claiming webhook deliveries failed")
            return []

    async def _attempt(self, delivery: Delivery) -> None:
        try:
            await self.deliver(delivery)
        except Exception:
            # recording the outcome failed (the database); the row's lock lapses and
            # it is claimed again, its attempt already counted by the claim
            log.exception("webhook delivery %s could not be recorded", delivery.id)

    async def deliver(self, delivery: Delivery) -> None:
        """One attempt, with its outcome recorded: every way it can fail (an exception of
        any kind included) is a failed attempt that counts toward webhook_max_attempts."""
        status: int | None = None
        try:
            url = check_url(delivery.url)
        except ValueError as exc:
            await self._give_up(delivery, f"the URL cannot be used: {exc}")
            return
        try:
            status, answer = await self._post(delivery, url)
        except AddressRefused as exc:
            await self._give_up(delivery, f"{exc} (webhooks to non-public addresses are refused)")
            return
        except Redirected as exc:
            status, error = exc.status, str(exc)
        except TimeoutError:
            error = f"no answer within the attempt's {self.settings.webhook_timeout_seconds:g} s deadline"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            if 200 <= status < 300:
                await self.outbox.delivered(delivery.id, status)
                metrics.WEBHOOKS.labels("delivered").inc()
                return
            error = f"HTTP {status}: {answer}" if answer else f"HTTP {status}"
        again = retry_at(delivery.attempts, self.settings, time.time())
        log.info("webhook for %s failed (%s), attempt %d%s", delivery.request_id, error, delivery.attempts, "; giving up" if again is None else "")
        await self.outbox.failed(delivery.id, error=error, status=status, retry_at=again)
        metrics.WEBHOOKS.labels("failed" if again is None else "retry").inc()

    async def _post(self, delivery: Delivery, url: httpx.URL) -> tuple[int, str]:
        """POST the signed body; (status, the first bytes of a non-2xx answer). One
        deadline covers connect, send and answer: a receiver trickling bytes fails at it."""
        body = delivery.body.encode()
        record = await self.requests.get(delivery.request_id)
        user_id = (record.key_id if record else None) or "anonymous"
        headers = {"Content-Type": "application/json", "User-Agent": "openfal-webhooks/1", **self.signer.headers(delivery.request_id, user_id, body)}
        deadline = self.settings.webhook_timeout_seconds
        async with asyncio.timeout(deadline):
            request = self.client.build_request("POST", url, content=body, headers=headers, timeout=deadline)
            response = await self.client.send(request, stream=True, follow_redirects=False)
            try:
                if 200 <= response.status_code < 300:
                    return response.status_code, ""  # the answer's body says nothing more
                answer = await _prefix(response, ANSWER_PREFIX_BYTES)
                return response.status_code, answer.decode("utf-8", "replace")[:ERROR_ANSWER_CHARS]
            finally:
                await response.aclose()

    async def _give_up(self, delivery: Delivery, error: str) -> None:
        """A failure no retry can mend: the delivery fails now."""
        log.info("webhook for %s failed for good: %s", delivery.request_id, error)
        await self.outbox.failed(delivery.id, error=error, status=None, retry_at=None)
        metrics.WEBHOOKS.labels("failed").inc()

    async def close(self) -> None:
        await self.client.aclose()
