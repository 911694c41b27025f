"""Media storage: where generated and re-hosted files live and how clients reach them."""

from __future__ import annotations

from typing import Protocol

from openfal.backends.base import MediaBlob
from openfal.config import Settings


class MediaStore(Protocol):
    """A place for files with public, unguessable URLs."""

    async def put(self, blob: MediaBlob, key: str) -> None:
        """Store the blob under ``key`` (made by ``media.keys.new_key``)."""
        ...

    def url(self, key: str, base_url: str) -> str:
        """An absolute URL for the key; ``base_url`` is openfal's own public base."""
        ...

    async def delete(self, key: str) -> None:
        ...

    async def close(self) -> None:
        ...


def open_media(settings: Settings) -> MediaStore:
    if settings.media_backend == "s3":
        from openfal.media.s3 import S3MediaStore

        return S3MediaStore(settings)
    from openfal.media.local import LocalMediaStore

    return LocalMediaStore(settings.effective_media_dir)
