"""Server-wide secrets kept in the database, so every API and worker process of a
deployment signs webhooks with the same key."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from openfal.store.db import Database
from openfal.store.schema import server_secrets


async def get_or_create(db: Database, name: str, make: Callable[[], str]) -> str:
    """The stored value, creating it once; concurrent creators converge on one value."""
    query = sa.select(server_secrets.c.value).where(server_secrets.c.name == name)
    async with db.read() as conn:
        value = (await conn.execute(query)).scalar()
    if value is not None:
        return value
    insert = sqlite_insert if db.is_sqlite else pg_insert
    async with db.write() as conn:
        await conn.execute(
            insert(server_secrets)
            .values(name=name, value=make(), created_at=time.time())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return (await conn.execute(query)).scalar_one()
