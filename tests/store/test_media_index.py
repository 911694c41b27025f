"""The media index on both databases."""

from __future__ import annotations

import time
from pathlib import Path

from openfal.media.local import LocalMediaStore
from openfal.store.db import Database
from openfal.store.media_index import MediaIndex


async def test_indexing_a_key_again_updates_it(db: Database, tmp_path: Path) -> None:
    """A re-sent upload re-indexes its key: the later size and expiry win, no error."""
    index = MediaIndex(db, default_ttl=60)
    await index.add("k" * 20 + "/a.png", 3, ttl=10)
    await index.add("k" * 20 + "/a.png", 5, keep_forever=True)
    store = LocalMediaStore(tmp_path)
    assert await index.expire(store, time.time() + 3600) == 0
