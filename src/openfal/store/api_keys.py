"""API keys. Keys look like fal's: ``<key_id>:<secret>``; only a SHA-256 of the
secret is stored (the secret is 256 random bits, so a slow hash adds nothing)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from openfal.models import ApiKey
from openfal.store import ledger
from openfal.store.db import Database
from openfal.store.schema import api_keys

#: what set_limits may change
LIMITS = frozenset({"max_concurrent", "rpm", "endpoints", "expires_at", "max_queued", "commercial_only"})


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _limit_values(limits: Mapping[str, Any]) -> dict[str, Any]:
    allowed = {k: v for k, v in limits.items() if k in LIMITS}
    if "commercial_only" in allowed:
        allowed["commercial_only"] = bool(allowed["commercial_only"])
    if allowed.get("endpoints") is not None:
        allowed["endpoints"] = list(allowed["endpoints"])
    return allowed


def _key(row: sa.Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        is_admin=bool(row.is_admin),
        max_concurrent=row.max_concurrent,
        rpm=row.rpm,
        balance_micros=row.balance_micros,
        endpoints=tuple(row.endpoints) if row.endpoints is not None else None,
        expires_at=row.expires_at,
        max_queued=row.max_queued,
        commercial_only=bool(row.commercial_only),
    )


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, name: str, *, is_admin: bool = False, limits: Mapping[str, Any] | None = None, credit_micros: int | None = None
    ) -> tuple[ApiKey, str]:
        """A new key and its full secret string, shown once. Its limits and opening
        credit are written in the same transaction: a key never exists without them."""
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        row = {
            "id": key_id,
            "name": name,
            "secret_hash": hash_secret(secret),
            "created_at": time.time(),
            "revoked_at": None,
            "is_admin": is_admin,
            **_limit_values(limits or {}),
        }
        async with self.db.write() as conn:
            await conn.execute(api_keys.insert().values(**row))
            if credit_micros is not None:
                await ledger.credit(conn, key_id, credit_micros)
            created = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).one()
        return _key(created), f"{key_id}:{secret}"

    async def verify(self, token: str) -> ApiKey | None:
        """The active key a ``key_id:secret`` string names, or None."""
        key_id, _, secret = token.partition(":")
        if not key_id or not secret:
            return None
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_hash, hash_secret(secret)):
            return None
        return _key(row)

    async def list(self) -> list[ApiKey]:
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at))).all()
        return [_key(r) for r in rows]

    async def revoke(self, key_id: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        return result.rowcount == 1

    async def get(self, key_id: str) -> ApiKey | None:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
        return _key(row) if row else None

    async def set_limits(self, key_id: str, **limits: Any) -> bool:
        """Set any of ``max_concurrent``, ``rpm``, ``endpoints`` (patterns),
        ``expires_at`` and ``max_queued`` (None lifts that limit)."""
        allowed = _limit_values(limits)
        async with self.db.write() as conn:
            result = await conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(**allowed))
        return result.rowcount == 1
