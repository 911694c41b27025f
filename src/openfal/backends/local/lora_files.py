"""LoRA files on this machine: where a request's ``loras[].path`` points, brought to a
local ``.safetensors`` file that every request and worker process here shares.

A path is one of
* an http(s) URL (or a ``data:`` URI): fetched through the guarded fetcher (private
  addresses refused, ``OPENFAL_MAX_LORA_BYTES``, the fetch time limit);
* one of openfal's own files (``/files/...`` or the bucket's URLs, as the fal clients'
  ``upload_file`` returns them): read from the media store by the same fetcher;
* the name of a LoRA the operator installed under ``OPENFAL_LORAS_DIR``.

Downloads are content-addressed: ``blobs/<sha256>.safetensors``, with ``by-url/<sha256
of the URL>`` naming the blob a URL gave, so a URL is fetched once per machine and two
URLs of the same file share one blob. Files are renamed into place, so processes that
race on the same URL each end with a whole file. Past ``OPENFAL_LORA_CACHE_BYTES`` the
least recently used blobs are deleted.

Only safetensors is ever opened: pickle formats (``.bin``, ``.pt``, ``.ckpt`` ...) run
code when loaded, so they are refused by name and, whatever the name, a file must parse
as safetensors before the engine sees it. The header is user data: its length is bounded
(``MAX_HEADER_BYTES``) before a byte of it is parsed, its nesting while it is (Python's
parser stops at its recursion limit: a 422, not a 500), and it is parsed in a thread,
once per file version per process (a parse holds the GIL, so the bound is what keeps
the event loop's stall short; the thread keeps the read and the hashing off it).

Plain ``http://`` URLs are accepted, as for every other input URL (fal's endpoints take
them too): the file's owner decides its content over https as well, a LoRA can change
an image but never run code (safetensors only), blobs are named by their content, and
the private-address guard applies either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from openfal.config import Settings
from openfal.errors import InputRejected, field_loc
from openfal.fetch import fetch_to_file

log = logging.getLogger("openfal.local")

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
#: a safetensors header is JSON naming each tensor (~150 bytes each): a FLUX LoRA on
#: every Linear layer with its CLIP part and kohya's training metadata stays under
#: 300 KB, so past this it is not a LoRA (and parsing it would hold the GIL for long:
#: an 89 MB header stalled the server 15-27 s)
MAX_HEADER_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoraFile:
    """One LoRA of a request, on local disk."""

    #: sha256 of the file: the adapter's identity on the engine
    digest: str
    file: Path
    scale: float
    #: what the request named (a URL is shortened for logs)
    source: str
    #: the runner hint a worker that has it loaded advertises: the path as the request
    #: named it, without a query string or fragment (None for a data URI)
    hint: str | None = None


def refused(field: str, message: str) -> InputRejected:
    return InputRejected([{"loc": field_loc(field), "msg": message, "type": "lora_invalid"}], message)


class LoraFiles:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = (settings.lora_cache_dir or settings.data_dir / "loras").resolve()
        self.installed = settings.loras_dir.resolve() if settings.loras_dir else None
        self.blobs = self.root / "blobs"
        self.by_url = self.root / "by-url"
        self.partial = self.root / "partial"
        #: (path, size, mtime) of an installed LoRA -> its sha256
        self._installed_digests: dict[tuple[Path, int, int], str] = {}
        #: (path, size, mtime) of the files whose header passed the check
        self._checked: set[tuple[Path, int, int]] = set()

    async def resolve(self, refs: list[tuple[str, float]], client: httpx.AsyncClient) -> list[LoraFile]:
        """Each reference as a local, checked safetensors file (fetched if need be)."""
        files = []
        for index, (path, scale) in enumerate(refs):
            field = f"loras.{index}.path"
            local = await self._local(path, field, client)
            digest = await asyncio.to_thread(self._checked_digest, local, field)
            files.append(LoraFile(digest=digest, file=local, scale=scale, source=_short(path), hint=hint_of(path)))
        self.evict(keep={f.file for f in files})
        return files

    async def _local(self, path: str, field: str, client: httpx.AsyncClient) -> Path:
        if (refusal := pickle_refusal(path)) is not None:
            raise refused(field, refusal)
        if path[:5].lower() == "data:" or "://" in path or path.startswith("/files/"):
            return await self._downloaded(path, field, client)
        return self._installed(path, field)

    def _installed(self, name: str, field: str) -> Path:
        if self.installed is None or not _NAME.match(name) or ".." in name.split("/"):
            raise refused(field, f"{_short(name)!r} is not an http(s) URL, an uploaded file or a LoRA installed on this server")
        for candidate in (self.installed / name, self.installed / f"{name}.safetensors"):
            resolved = candidate.resolve()
            if resolved.is_file() and resolved.is_relative_to(self.installed) and resolved.suffix == ".safetensors":
                return resolved
        raise refused(field, f"No LoRA named {name!r} is installed on this server")

    async def _downloaded(self, url: str, field: str, client: httpx.AsyncClient) -> Path:
        if url.startswith("/files/"):
            url = f"http://openfal.local{url}"  # a relative own-file path: the media store answers it
        index = self.by_url / hashlib.sha256(url.encode()).hexdigest()
        known = _read_index(index)
        if known is not None and (blob := self.blobs / f"{known}.safetensors").is_file():
            os.utime(blob)  # recently used
            log.info("LoRA %s found in the cache (%s)", _short(url), known[:12])
            return blob
        for folder in (self.blobs, self.by_url, self.partial):
            folder.mkdir(parents=True, exist_ok=True)
        partial = self.partial / f"{uuid.uuid4().hex}.part"
        started = time.monotonic()
        _, size = await fetch_to_file(url, partial, self.settings, field=field, max_bytes=self.settings.max_lora_bytes, client=client)
        try:
            await asyncio.to_thread(check_safetensors, partial, field)
            digest = await asyncio.to_thread(_sha256, partial)
            blob = self.blobs / f"{digest}.safetensors"
            os.replace(partial, blob)
        finally:
            partial.unlink(missing_ok=True)
        tmp_index = self.by_url / f".{uuid.uuid4().hex}"
        tmp_index.write_text(digest)
        os.replace(tmp_index, index)
        log.info("LoRA %s downloaded: %d bytes in %.2f s (%s)", _short(url), size, time.monotonic() - started, digest[:12])
        return blob

    def _checked_digest(self, path: Path, field: str) -> str:
        """The file's digest once its header passed ``check_safetensors`` (checked once
        per version of the file: a cached LoRA is not parsed again on every use)."""
        stat = path.stat()
        version = (path, stat.st_size, stat.st_mtime_ns)
        if version not in self._checked:
            check_safetensors(path, field)
            self._checked.add(version)
        return self._digest_of(path)

    def _digest_of(self, path: Path) -> str:
        """A downloaded blob is named by its digest; an installed file is hashed once per
        modification (its size and mtime), not on every request that names it."""
        if path.parent == self.blobs and len(path.stem) == 64:
            return path.stem
        stat = path.stat()
        version = (path, stat.st_size, stat.st_mtime_ns)
        if version not in self._installed_digests:
            self._installed_digests[version] = _sha256(path)
        return self._installed_digests[version]

    def evict(self, keep: frozenset[Path] | set[Path] = frozenset()) -> None:
        """Delete least recently used blobs until the cache is within its budget."""
        if not self.blobs.is_dir():
            return
        blobs = sorted((p.stat().st_mtime, p.stat().st_size, p) for p in self.blobs.glob("*.safetensors"))
        total = sum(size for _, size, _ in blobs)
        for _, size, blob in blobs:
            if total <= self.settings.lora_cache_bytes:
                break
            if blob in keep:
                continue
            blob.unlink(missing_ok=True)
            total -= size
            log.info("LoRA cache: evicted %s (%d bytes)", blob.name[:12], size)


def pickle_refusal(path: str) -> str | None:
    """Why ``path`` names a pickle format (refused unread), or None."""
    suffix = Path(unquote(urlsplit(path).path)).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return f"{suffix} LoRA files are pickles, which can run code when loaded: only .safetensors is accepted"
    return None


def check_safetensors(path: Path, field: str) -> None:
    """Refuse anything that is not a safetensors file: an 8-byte little-endian header
    length, then that much JSON naming tensors whose offsets lie inside the file."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise refused(field, "The LoRA file is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES:
            raise refused(field, f"The LoRA file is not a safetensors file (its header claims more than {MAX_HEADER_BYTES} bytes, no LoRA has)")
        if not 2 <= length <= size - 8:
            raise refused(field, "The LoRA file is not a safetensors file (no valid header)")
        try:
            header = json.loads(handle.read(length))
        except RecursionError:
            raise refused(field, "The LoRA file is not a safetensors file (its header is nested too deep)") from None
        except (ValueError, UnicodeDecodeError):
            raise refused(field, "The LoRA file is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise refused(field, "The LoRA file is not a safetensors file (its header is not a table of tensors)")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    data = size - 8 - length
    for name, info in tensors.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1] <= data):
            raise refused(field, f"The LoRA file is not a valid safetensors file (tensor {name[:80]!r} lies outside it)")
    if not tensors:
        raise refused(field, "The LoRA file holds no tensors")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _read_index(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return value if re.fullmatch(r"[0-9a-f]{64}", value) else None


def hint_of(path: str) -> str | None:
    """A LoRA's runner hint (X-Fal-Runner-Hint): its URL or name without a query
    string (which may hold a signature) or fragment; a data URI has none."""
    if path.startswith("data:"):
        return None
    return path.split("#", 1)[0].split("?", 1)[0] or None


def _short(text: str) -> str:
    if text.startswith("data:"):
        return text[:30] + "..."
    return text if len(text) <= 100 else text[:97] + "..."
