"""Webhook delivery: fal's payload, signed with ED25519 the way fal signs, delivered
from the persisted outbox with exponential backoff (10 attempts over about 2 hours by
default). Delivery runs in its own task and never blocks a worker.

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
import random
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from openfal import metrics
from openfal.aio import wait_event
from openfal.config import Settings
from openfal.fetch import AddressRefused, make_client
from openfal.store import secrets
from openfal.store.db import Database
from openfal.store.outbox import Delivery, OutboxStore
from openfal.store.requests import RequestStore

log = logging.getLogger("openfal.webhooks")

SIGNING_KEY_NAME = "webhook_ed25519"
CLAIM_BATCH = 20
POLL_SECONDS = 1.0


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


def retry_delay(attempt: int, settings: Settings) -> float:
    """Exponential backoff with jitter: 15 s, 30 s, 1 min ... capped at 40 min."""
    base = settings.webhook_base_delay_seconds * 2 ** max(0, attempt - 1)
    return min(base, settings.webhook_max_delay_seconds) * random.uniform(0.8, 1.2)


class WebhookDeliverer:
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
        self.wake = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()

    async def run(self) -> None:
        """Deliver until ``stop()``, which lets the deliveries in flight finish."""
        while not self._stop.is_set():
            try:
                due = await self.outbox.claim_due(limit=CLAIM_BATCH, lock_seconds=self.settings.webhook_timeout_seconds * 4)
                if due:
                    await asyncio.gather(*(self.deliver(d) for d in due))
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery loop failed")
            await wait_event(self.wake, POLL_SECONDS)
            self.wake.clear()

    async def deliver(self, delivery: Delivery) -> None:
        body = delivery.body.encode()
        record = await self.requests.get(delivery.request_id)
        user_id = (record.key_id if record else None) or "anonymous"
        headers = {"Content-Type": "application/json", "User-Agent": "openfal-webhooks/1", **self.signer.headers(delivery.request_id, user_id, body)}
        status: int | None = None
        try:
            response = await self.client.post(
                delivery.url, content=body, headers=headers, timeout=self.settings.webhook_timeout_seconds
            )
            status = response.status_code
            if 200 <= status < 300:
                await self.outbox.delivered(delivery.id, status)
                metrics.WEBHOOKS.labels("delivered").inc()
                return
            error = f"HTTP {status}"
        except AddressRefused as exc:
            await self.outbox.failed(delivery.id, error=f"{exc} (webhooks to non-public addresses are refused)", status=None, retry_at=None)
            metrics.WEBHOOKS.labels("failed").inc()
            return
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        last = delivery.attempts >= self.settings.webhook_max_attempts
        retry_at = None if last else time.time() + retry_delay(delivery.attempts, self.settings)
        log.info("webhook for %s failed (%s), attempt %d%s", delivery.request_id, error, delivery.attempts, "; giving up" if last else "")
        await self.outbox.failed(delivery.id, error=error, status=status, retry_at=retry_at)
        metrics.WEBHOOKS.labels("failed" if last else "retry").inc()

    async def close(self) -> None:
        await self.client.aclose()
