"""Signed, expiring claims: the one way openfal hands out a credential that any API node
can check without a database read (realtime tokens, CDN upload tokens, upload tickets).

A value is ``<prefix><base64url JSON>.<hex HMAC-SHA256>``, the MAC taken over the prefix
and the payload, so a value of one kind never opens as another; the JSON carries its
expiry as ``exp`` (unix seconds). The secret is the server's (``uploads.SECRET_NAME`` in
the secrets table), shared by every process."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


class SignedClaims:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def sign(self, prefix: str, claims: dict[str, Any], seconds: float) -> tuple[str, float]:
        """``claims`` signed under ``prefix``, valid for ``seconds``: (value, expiry)."""
        expires = time.time() + seconds
        return self.sign_until(prefix, claims, expires), expires

    def sign_until(self, prefix: str, claims: dict[str, Any], expires: float) -> str:
        """``claims`` signed under ``prefix``, valid until ``expires`` (unix seconds)."""
        payload = base64.urlsafe_b64encode(json.dumps({**claims, "exp": expires}, separators=(",", ":")).encode()).rstrip(b"=").decode()
        return f"{prefix}{payload}.{self._mac(prefix, payload)}"

    def open(self, prefix: str, value: str) -> dict[str, Any] | None:
        """The claims of a value signed under ``prefix`` that has not expired, else None."""
        if not value.startswith(prefix):
            return None
        payload, _, mac = value[len(prefix) :].rpartition(".")
        if not payload or not hmac.compare_digest(mac, self._mac(prefix, payload)):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int | float) or claims["exp"] <= time.time():
            return None
        return claims

    def _mac(self, prefix: str, payload: str) -> str:
        return hmac.new(self.secret, (prefix + payload).encode(), hashlib.sha256).hexdigest()
