"""Upload credentials for fal's storage API, signed so any API node can check them:
the CDN token the Python client fetches before ``/files/upload``, and the one-shot
upload tickets the JS client PUTs to (without auth headers, as fal's CDN URLs work).

Both are signed claims (signed_claims.py), each kind under its own prefix."""

from __future__ import annotations

import secrets as pysecrets
from dataclasses import dataclass
from typing import Any

from openfal.media.retention import DEFAULT as DEFAULT_LIFECYCLE
from openfal.media.retention import MediaLifecycle
from openfal.signed_claims import SignedClaims
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
        self.claims = SignedClaims(secret)

    @classmethod
    async def load(cls, db: Database) -> UploadSigner:
        value = await secrets.get_or_create(db, SECRET_NAME, lambda: pysecrets.token_hex(32))
        return cls(bytes.fromhex(value))

    def file_signature(self, media_key: str, expires: float) -> str:
        """A signed URL's credential: opens one file to anyone until ``expires``."""
        return self.claims.sign_until(SIGNED_FILE_PREFIX, {"mk": media_key}, expires)

    def signed_file(self, media_key: str, signature: str) -> bool:
        """Whether a signed URL's credential is valid, unexpired and for this file."""
        claims = self.claims.open(SIGNED_FILE_PREFIX, signature)
        return claims is not None and claims.get("mk") == media_key

    def token(self, key_id: str | None) -> tuple[str, float]:
        return self.claims.sign(TOKEN_PREFIX, {"kid": key_id}, TOKEN_SECONDS)

    def token_key(self, token: str) -> tuple[bool, str | None]:
        """(valid, key id) of a CDN token."""
        claims = self.claims.open(TOKEN_PREFIX, token)
        return (claims is not None, claims.get("kid") if claims else None)

    def ticket(self, ticket: Ticket) -> str:
        claims: dict[str, Any] = {"mk": ticket.media_key, "ct": ticket.content_type, "kid": ticket.key_id}
        if ticket.upload_id is not None:
            claims.update(up=ticket.upload_id, ttl=ticket.lifecycle.ttl, fv=ticket.lifecycle.keep_forever, acl=ticket.lifecycle.acl)
        return self.claims.sign(TICKET_PREFIX, claims, TICKET_SECONDS)[0]

    def open_ticket(self, value: str, *, multipart: bool) -> Ticket | None:
        """The ticket, if valid, unexpired and of the asked kind (single or multipart)."""
        claims = self.claims.open(TICKET_PREFIX, value)
        if claims is None or ("up" in claims) != multipart:
            return None
        return Ticket(
            media_key=claims["mk"],
            content_type=claims["ct"],
            key_id=claims.get("kid"),
            upload_id=claims.get("up"),
            lifecycle=MediaLifecycle(ttl=claims.get("ttl"), keep_forever=bool(claims.get("fv")), acl=claims.get("acl")),
        )
