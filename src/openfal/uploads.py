"""Upload credentials for fal's storage API, signed so any API node can check them:
the CDN token the Python client fetches before ``/files/upload``, and the one-shot
upload tickets the JS client PUTs to (without auth headers, as fal's CDN URLs work).

Both are ``<prefix><base64url json>.<hex hmac-sha256>`` with an expiry inside."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets as pysecrets
import time
from dataclasses import dataclass
from typing import Any

from openfal.media.retention import DEFAULT as DEFAULT_LIFECYCLE
from openfal.media.retention import MediaLifecycle
from openfal.store import secrets
from openfal.store.db import Database

SECRET_NAME = "upload_hmac"
TOKEN_PREFIX = "oftok."
TICKET_PREFIX = "oftkt."
SIGNED_FILE_PREFIX = "ofsig."
TOKEN_SECONDS = 3600
TICKET_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Ticket:
    """Permission to PUT one file to one media key: in one request, or, with an
    ``upload_id``, in parts of a multipart upload, which also carry the file's lifecycle
    (the parts and the completion arrive without the initiating request's headers)."""

    media_key: str
    content_type: str
    key_id: str | None
    upload_id: str | None = None
    lifecycle: MediaLifecycle = DEFAULT_LIFECYCLE


class UploadSigner:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    @classmethod
    async def load(cls, db: Database) -> UploadSigner:
        value = await secrets.get_or_create(db, SECRET_NAME, lambda: pysecrets.token_hex(32))
        return cls(bytes.fromhex(value))

    def _sign(self, prefix: str, claims: dict[str, Any]) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
        mac = hmac.new(self.secret, (prefix + payload).encode(), hashlib.sha256).hexdigest()
        return f"{prefix}{payload}.{mac}"

    def _open(self, prefix: str, value: str) -> dict[str, Any] | None:
        if not value.startswith(prefix) or "." not in value[len(prefix) :]:
            return None
        payload, _, mac = value[len(prefix) :].rpartition(".")
        expected = hmac.new(self.secret, (prefix + payload).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac, expected):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return None
        return claims if isinstance(claims, dict) and claims.get("exp", 0) > time.time() else None

    def file_signature(self, media_key: str, expires: float) -> str:
        """A signed URL's credential: opens one file to anyone until ``expires``."""
        return self._sign(SIGNED_FILE_PREFIX, {"mk": media_key, "exp": expires})

    def signed_file(self, media_key: str, signature: str) -> bool:
        """Whether a signed URL's credential is valid, unexpired and for this file."""
        claims = self._open(SIGNED_FILE_PREFIX, signature)
        return claims is not None and claims.get("mk") == media_key

    def token(self, key_id: str | None) -> tuple[str, float]:
        expires = time.time() + TOKEN_SECONDS
        return self._sign(TOKEN_PREFIX, {"kid": key_id, "exp": expires}), expires

    def token_key(self, token: str) -> tuple[bool, str | None]:
        """(valid, key id) of a CDN token."""
        claims = self._open(TOKEN_PREFIX, token)
        return (claims is not None, claims.get("kid") if claims else None)

    def ticket(self, ticket: Ticket) -> str:
        claims: dict[str, Any] = {"mk": ticket.media_key, "ct": ticket.content_type, "kid": ticket.key_id, "exp": time.time() + TICKET_SECONDS}
        if ticket.upload_id is not None:
            claims.update(up=ticket.upload_id, ttl=ticket.lifecycle.ttl, fv=ticket.lifecycle.keep_forever, acl=ticket.lifecycle.acl)
        return self._sign(TICKET_PREFIX, claims)

    def open_ticket(self, value: str, *, multipart: bool) -> Ticket | None:
        """The ticket, if valid, unexpired and of the asked kind (single or multipart)."""
        claims = self._open(TICKET_PREFIX, value)
        if claims is None or ("up" in claims) != multipart:
            return None
        return Ticket(
            media_key=claims["mk"],
            content_type=claims["ct"],
            key_id=claims.get("kid"),
            upload_id=claims.get("up"),
            lifecycle=MediaLifecycle(ttl=claims.get("ttl"), keep_forever=bool(claims.get("fv")), acl=claims.get("acl")),
        )
