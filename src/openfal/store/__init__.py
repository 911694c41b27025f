"""The durable store: SQLite (WAL, one writer) or PostgreSQL (SKIP LOCKED claims)."""

from openfal.store.db import Database

__all__ = ["Database"]
