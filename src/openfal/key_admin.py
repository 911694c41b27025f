"""Key administration, one set of operations behind both the admin API and the
``openfal keys`` / ``openfal usage`` commands: create (with limits and opening credit),
list, revoke, set limits, add credit, report usage, and the JSON both show. Free of any
transport: a missing key comes back as None or False, which each caller answers its own
way (a 404, an exit status)."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from typing import Any

from openfal import accounting
from openfal.models import ApiKey
from openfal.store import ledger
from openfal.store.api_keys import KeyStore
from openfal.store.db import Database


def _nothing_cached(key_id: str) -> None:
    """The CLI's process has no authentication cache to drop a changed key from."""


class KeyAdmin:
    def __init__(self, db: Database, keys: KeyStore, *, forget: Callable[[str], None] = _nothing_cached) -> None:
        """``forget`` drops a key from this process's authentication cache once its
        limits change or it is revoked, so the change holds from the next request."""
        self.db = db
        self.keys = keys
        self.forget = forget

    async def create(
        self, name: str, *, admin: bool = False, limits: Mapping[str, Any] | None = None, credit: float | None = None
    ) -> tuple[ApiKey, str]:
        """A new key and its secret (shown once); ``credit`` in dollars makes it
        credit-limited, None leaves it metered only."""
        micros = None if credit is None else round(credit * accounting.MICROS)
        return await self.keys.create(name, is_admin=admin, limits=limits, credit_micros=micros)

    async def list(self) -> list[ApiKey]:
        return await self.keys.list()

    async def revoke(self, key_id: str) -> bool:
        """False when no active key has this id."""
        if not await self.keys.revoke(key_id):
            return False
        self.forget(key_id)
        return True

    async def set_limits(self, key_id: str, limits: Mapping[str, Any]) -> ApiKey | None:
        """The key with its new limits (a limit given as None is lifted)."""
        if not await self.keys.set_limits(key_id, **limits):
            return None
        self.forget(key_id)
        return await self.keys.get(key_id)

    async def credit(self, key_id: str, dollars: float) -> ApiKey | None:
        """The key after ``dollars`` are added (negative debits); it becomes credit-limited."""
        if await self.keys.get(key_id) is None:
            return None
        async with self.db.write() as conn:
            await ledger.credit(conn, key_id, round(dollars * accounting.MICROS))
        return await self.keys.get(key_id)

    async def usage(
        self, *, key_id: str | None = None, since: float | None = None, until: float | None = None, period: str = "day"
    ) -> builtins.list[dict[str, Any]]:  # builtins: this class has a method named list
        """Charges per key, endpoint and period (``hour``, ``day`` or ``total``)."""
        rows = await ledger.usage(self.db, key_id=key_id, since=since, until=until, period=period)
        return [usage_json(row) for row in rows]


def key_json(key: ApiKey) -> dict[str, Any]:
    """A key as the admin API, the CLI and ``/api/me`` show it (never its secret)."""
    return {
        "id": key.id,
        "name": key.name,
        "admin": key.is_admin,
        "active": key.active,
        "created_at": key.created_at,
        "max_concurrent": key.max_concurrent,
        "max_queued": key.max_queued,
        "rpm": key.rpm,
        "balance": None if key.balance_micros is None else key.balance_micros / accounting.MICROS,
        "endpoints": list(key.endpoints) if key.endpoints is not None else None,
        "expires_at": key.expires_at,
        "commercial_only": key.commercial_only,
    }


def usage_json(row: ledger.UsageRow) -> dict[str, Any]:
    return {
        "key_id": row.key_id,
        "endpoint_id": row.endpoint_id,
        "period_start": row.period_start,
        "requests": row.requests,
        "succeeded": row.succeeded,
        "images": row.images,
        "megapixels": round(row.megapixels, 3),
        "video_seconds": row.video_seconds,
        "cost": row.cost_micros / accounting.MICROS,
    }
