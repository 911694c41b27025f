"""Media keys: an unguessable folder per file, then a readable file name."""

from __future__ import annotations

import mimetypes
import re
import secrets
from urllib.parse import urlsplit

_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "video/mp4": ".mp4"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")


def _clean(text: str) -> str:
    return _DOTS.sub(".", _UNSAFE.sub("_", text)).strip("._")


def new_key(content_type: str, file_name: str | None = None) -> str:
    """Always a valid key (``is_valid_key``): a client's file name is made safe, runs
    of dots collapsed and the name cut to 100 characters keeping its extension."""
    ext = _EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ".bin"
    ext = "." + (_clean(ext)[:15] or "bin")
    name = _clean(file_name or "") or f"output{ext}"
    if "." not in name:
        name += ext
    stem, suffix = name.rsplit(".", 1)
    suffix = suffix[:15]
    name = _clean(f"{stem[: 100 - len(suffix) - 1]}.{suffix}")
    return f"{secrets.token_urlsafe(18)}/{name}"


_KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}/[A-Za-z0-9._-]{1,100}$")


FILES_PREFIX = "/files/"


def files_key(url: str) -> str | None:
    """The key in an openfal ``/files/{key}`` URL (any host), if the URL is one."""
    if not url.startswith(("http://", "https://")):
        return None
    try:
        path = urlsplit(url).path
    except ValueError:  # not a URL after all ("http://[::1": an unclosed IPv6 host)
        return None
    key = path[len(FILES_PREFIX) :] if path.startswith(FILES_PREFIX) else ""
    return key if is_valid_key(key) else None


def is_valid_key(key: str) -> bool:
    """Whether a key could have come from ``new_key`` (no traversal, no odd names)."""
    return bool(_KEY.match(key)) and ".." not in key
