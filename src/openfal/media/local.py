"""Media in a local folder, served by openfal itself under ``/files/{key}``."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from openfal.backends.base import MediaBlob
from openfal.media.keys import is_valid_key


def _checked(key: str) -> str:
    if not is_valid_key(key):
        raise ValueError(f"not a media key: {key!r}")
    return key


class LocalMediaStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path | None:
        """The file behind a key, or None for keys that are malformed or absent."""
        if not is_valid_key(key):
            return None
        path = self.root / key
        return path if path.is_file() else None

    async def put(self, blob: MediaBlob, key: str) -> None:
        await asyncio.to_thread(self._write, blob, self.root / _checked(key))

    @staticmethod
    def _write(blob: MediaBlob, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        if isinstance(blob.data, bytes):
            partial.write_bytes(blob.data)
        else:
            shutil.copyfile(blob.data, partial)
        os.replace(partial, target)

    def url(self, key: str, base_url: str) -> str:
        return f"{base_url}/files/{_checked(key)}"

    async def delete(self, key: str) -> None:
        """Remove the key's file and its folder; malformed keys name nothing to remove
        (the folder removed is the key's own, never the media root or above it)."""
        if not is_valid_key(key):
            return
        await asyncio.to_thread(shutil.rmtree, (self.root / key).parent, True)

    async def close(self) -> None:
        return None
