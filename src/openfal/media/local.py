"""Media in a local folder, served by openfal itself under ``/files/{key}``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from openfal.errors import BadRequest, PayloadTooLarge
from openfal.media.names import files_key, is_valid_key
from openfal.models import MediaBlob

#: multipart parts wait here (inside the root, so on a shared volume every API node
#: sees them; the dot keeps the folder out of the key space that ``/files/`` serves)
UPLOADS_DIR = ".uploads"
_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_COPY_CHUNK = 1024 * 1024


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

    def key_of(self, url: str) -> str | None:
        return files_key(url)

    async def size(self, key: str) -> int | None:
        path = self.path(key)
        return path.stat().st_size if path is not None else None

    async def chunks(self, key: str) -> AsyncIterator[bytes]:
        path = self.path(key)
        if path is None:
            return
        with path.open("rb") as source:
            while chunk := await asyncio.to_thread(source.read, _COPY_CHUNK):
                yield chunk

    async def delete(self, key: str) -> None:
        """Remove the key's file and its folder; malformed keys name nothing to remove
        (the folder removed is the key's own, never the media root or above it)."""
        if not is_valid_key(key):
            return
        await asyncio.to_thread(shutil.rmtree, (self.root / key).parent, True)

    async def close(self) -> None:
        return None

    def _upload_dir(self, upload_id: str) -> Path:
        if not _UPLOAD_ID.match(upload_id):
            raise BadRequest("Unknown upload")
        return self.root / UPLOADS_DIR / upload_id

    async def begin_upload(self, key: str, content_type: str) -> str:
        _checked(key)
        upload_id = secrets.token_urlsafe(18)
        await asyncio.to_thread(self._upload_dir(upload_id).mkdir, parents=True)
        return upload_id

    async def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        folder = self._upload_dir(upload_id)
        if not folder.is_dir():
            raise BadRequest("Unknown upload (finished, aborted or expired)")
        await asyncio.to_thread(self._write, MediaBlob(data, "application/octet-stream"), folder / f"{number}.part")
        return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'

    async def finish_upload(self, key: str, upload_id: str, parts: list[tuple[int, str]], max_bytes: int) -> int:
        folder = self._upload_dir(upload_id)
        return await asyncio.to_thread(self._join, folder, self.root / _checked(key), parts, max_bytes)

    @staticmethod
    def _join(folder: Path, target: Path, parts: list[tuple[int, str]], max_bytes: int) -> int:
        if not folder.is_dir():
            if target.is_file():  # completed already: a client retrying its "complete"
                return target.stat().st_size
            raise BadRequest("Unknown upload (finished, aborted or expired)")
        files = [(folder / f"{number}.part", etag.strip('"'), number) for number, etag in sorted(parts)]
        missing = [number for path, _, number in files if not path.is_file()]
        if missing:
            raise BadRequest(f"Parts never uploaded: {missing}")
        if sum(path.stat().st_size for path, _, _ in files) > max_bytes:
            shutil.rmtree(folder, ignore_errors=True)
            raise PayloadTooLarge(f"Upload larger than {max_bytes} bytes")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        size = 0
        try:
            with partial.open("wb") as out:
                for path, etag, number in files:
                    digest = hashlib.md5(usedforsecurity=False)
                    with path.open("rb") as part:
                        while chunk := part.read(_COPY_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                    if digest.hexdigest() != etag:
                        raise BadRequest(f"ETag of part {number} does not match what was uploaded")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, target)
        shutil.rmtree(folder, ignore_errors=True)
        return size

    async def purge_stale_uploads(self, started_before: float) -> int:
        return await asyncio.to_thread(self._purge_uploads, self.root / UPLOADS_DIR, started_before)

    @staticmethod
    def _purge_uploads(folder: Path, started_before: float) -> int:
        if not folder.is_dir():
            return 0
        stale = [d for d in folder.iterdir() if d.is_dir() and d.stat().st_ctime < started_before]
        for d in stale:
            shutil.rmtree(d, ignore_errors=True)
        return len(stale)
