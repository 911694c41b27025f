"""API-key authentication: ``Authorization: Key <key>`` (fal's clients) or
``Bearer <key>`` (resellers' docs). Verified keys are cached briefly because clients
poll status about ten times a second; a revoked key stops working within
``CACHE_SECONDS``."""

from __future__ import annotations

import time

from openfal.errors import Unauthorized
from openfal.models import ApiKey
from openfal.store.api_keys import KeyStore

CACHE_SECONDS = 10.0
SCHEMES = {"key", "bearer"}


def parse_authorization(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() not in SCHEMES or not token.strip():
        return None
    return token.strip()


class Authenticator:
    def __init__(self, keys: KeyStore, *, enabled: bool) -> None:
        self.keys = keys
        self.enabled = enabled
        self._cache: dict[str, tuple[float, ApiKey]] = {}

    async def authenticate(self, header: str | None) -> ApiKey | None:
        """The caller's key; None when auth is off. Raises Unauthorized otherwise."""
        if not self.enabled:
            return None
        token = parse_authorization(header)
        if token is None:
            raise Unauthorized()
        cached = self._cache.get(token)
        if cached and cached[0] > time.monotonic():
            key = cached[1]
        else:
            verified = await self.keys.verify(token)
            if verified is None:
                self._cache.pop(token, None)
                raise Unauthorized("Invalid or revoked API key")
            key = verified
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (time.monotonic() + CACHE_SECONDS, key)
        if key.expired(time.time()):
            raise Unauthorized("API key expired")
        return key

    def forget(self, key_id: str) -> None:
        """Drop a key from this process's cache after it changed (other processes see
        the change within ``CACHE_SECONDS``)."""
        self._cache = {token: entry for token, entry in self._cache.items() if entry[1].id != key_id}
