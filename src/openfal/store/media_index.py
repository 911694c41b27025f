"""Which media files exist, when they expire, who owns them and their ACL, so retention
and access work the same for a local folder and for S3; and each key's storage
defaults (fal's ``/v1/storage/settings``)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from openfal.media import MediaStore
from openfal.media.retention import DEFAULT, MediaLifecycle
from openfal.store.db import Database
from openfal.store.schema import media, storage_settings


class MediaIndex:
    def __init__(self, db: Database, default_ttl: float) -> None:
        self.db = db
        self.default_ttl = default_ttl

    async def add(
        self,
        key: str,
        size: int,
        *,
        request_id: str | None = None,
        ttl: float | None = None,
        keep_forever: bool = False,
        key_id: str | None = None,
        acl: dict[str, Any] | None = None,
    ) -> None:
        """Index a stored file, owned by ``key_id`` with ``acl`` (None: public);
        indexing a key again (a client re-sending an upload to the same URL) updates
        its size, expiry and ACL."""
        now = time.time()
        expires_at = None if keep_forever else now + (ttl or self.default_ttl)
        insert = (sqlite_insert if self.db.is_sqlite else pg_insert)(media).values(
            key=key, request_id=request_id, size=size, created_at=now, expires_at=expires_at, key_id=key_id, acl=acl
        )
        upsert = insert.on_conflict_do_update(index_elements=[media.c.key], set_={"size": size, "expires_at": expires_at, "acl": acl})
        async with self.db.write() as conn:
            await conn.execute(upsert)

    async def access(self, key: str) -> tuple[str | None, dict[str, Any] | None] | None:
        """(owner key id, ACL) of an indexed file; None when it is not indexed."""
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(media.c.key_id, media.c.acl).where(media.c.key == key))).first()
        return None if row is None else (row.key_id, row.acl)

    async def set_acl(self, key: str, acl: dict[str, Any]) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(media.update().where(media.c.key == key).values(acl=acl))
        return result.rowcount == 1

    async def defaults(self, key_id: str | None) -> MediaLifecycle:
        """A key's storage settings as a lifecycle (the server's when it has none)."""
        if key_id is None:
            return DEFAULT
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(storage_settings).where(storage_settings.c.key_id == key_id))).first()
        if row is None:
            return DEFAULT
        return MediaLifecycle(ttl=row.expiration_duration_seconds, keep_forever=bool(row.keep_forever), acl=row.initial_acl)

    async def set_defaults(self, key_id: str, lifecycle: MediaLifecycle) -> None:
        values = {
            "expiration_duration_seconds": lifecycle.ttl,
            "keep_forever": lifecycle.keep_forever,
            "initial_acl": lifecycle.acl,
            "updated_at": time.time(),
        }
        insert = (sqlite_insert if self.db.is_sqlite else pg_insert)(storage_settings).values(key_id=key_id, **values)
        async with self.db.write() as conn:
            await conn.execute(insert.on_conflict_do_update(index_elements=[storage_settings.c.key_id], set_=values))

    async def of_request(self, request_id: str) -> list[str]:
        """The files a request made (its outputs and previews; not its inputs)."""
        async with self.db.read() as conn:
            return list((await conn.execute(sa.select(media.c.key).where(media.c.request_id == request_id))).scalars())

    async def forget(self, keys: list[str]) -> None:
        """Drop deleted files from the index."""
        async with self.db.write() as conn:
            await conn.execute(media.delete().where(media.c.key.in_(keys)))

    async def expire(self, store: MediaStore, now: float, limit: int = 500) -> int:
        """Delete files past their time from the store, then forget them."""
        query = sa.select(media.c.key).where(media.c.expires_at < now).limit(limit)
        async with self.db.read() as conn:
            keys = list((await conn.execute(query)).scalars())
        for key in keys:
            await store.delete(key)
        if keys:
            async with self.db.write() as conn:
                await conn.execute(media.delete().where(media.c.key.in_(keys)))
        return len(keys)
