"""Which media files exist and when they expire, so retention works the same for a
local folder and for S3."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from openfal.media import MediaStore
from openfal.store.db import Database
from openfal.store.schema import media


class MediaIndex:
    def __init__(self, db: Database, default_ttl: float) -> None:
        self.db = db
        self.default_ttl = default_ttl

    async def add(
        self, key: str, size: int, *, request_id: str | None = None, ttl: float | None = None, keep_forever: bool = False
    ) -> None:
        """Index a stored file; indexing a key again (a client re-sending an upload to
        the same URL) updates its size and expiry."""
        now = time.time()
        expires_at = None if keep_forever else now + (ttl or self.default_ttl)
        insert = (sqlite_insert if self.db.is_sqlite else pg_insert)(media).values(
            key=key, request_id=request_id, size=size, created_at=now, expires_at=expires_at
        )
        upsert = insert.on_conflict_do_update(index_elements=[media.c.key], set_={"size": size, "expires_at": expires_at})
        async with self.db.write() as conn:
            await conn.execute(upsert)

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
