"""Media storage: where generated and re-hosted files live and how clients reach them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from openfal.config import Settings
from openfal.models import MediaBlob


class MediaStore(Protocol):
    """A place for files with public, unguessable URLs."""

    async def put(self, blob: MediaBlob, key: str) -> None:
        """Store the blob under ``key`` (made by ``media.names.new_key``)."""
        ...

    def url(self, key: str, base_url: str) -> str:
        """An absolute URL for the key; ``base_url`` is openfal's own public base."""
        ...

    async def delete(self, key: str) -> None:
        ...

    # Reading our own files back (inputs that name them, see ``media.own``).

    def key_of(self, url: str) -> str | None:
        """The key behind one of this store's URLs (openfal's ``/files/{key}`` on any
        host, or the store's direct URLs), else None. Keys are unguessable, so the host
        does not matter."""
        ...

    async def size(self, key: str) -> int | None:
        """The stored size of ``key``; None when it does not exist."""
        ...

    def chunks(self, key: str) -> AsyncIterator[bytes]:
        """The stored bytes of ``key``, in pieces."""
        ...

    # Multipart uploads (fal's storage API for files over 90-100 MB): parts arrive
    # separately, possibly at different API nodes, and become one file at the end.

    async def begin_upload(self, key: str, content_type: str) -> str:
        """Start a multipart upload to ``key``; returns the store's upload id."""
        ...

    async def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        """Store part ``number`` (1-10000; re-sending replaces it); returns its ETag."""
        ...

    async def finish_upload(self, key: str, upload_id: str, parts: list[tuple[int, str]], max_bytes: int) -> int:
        """Join the listed (number, etag) parts in number order into ``key``; returns its
        size. ``BadRequest`` for unknown parts or wrong ETags, ``PayloadTooLarge`` past
        ``max_bytes`` (the upload is then aborted)."""
        ...

    async def purge_stale_uploads(self, started_before: float) -> int:
        """Abort multipart uploads started before this unix time; returns how many."""
        ...

    async def close(self) -> None:
        ...


def open_media(settings: Settings) -> MediaStore:
    if settings.media_backend == "s3":
        from openfal.media.s3 import S3MediaStore

        return S3MediaStore(settings)
    from openfal.media.local import LocalMediaStore

    return LocalMediaStore(settings.effective_media_dir)
