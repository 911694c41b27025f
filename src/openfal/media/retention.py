"""fal's object lifecycle preference (``X-Fal-Object-Lifecycle`` on uploads,
``X-Fal-Object-Lifecycle-Preference`` on submits): how long the files a request makes
or a client uploads are kept. ``{"expiration_duration_seconds": N}`` keeps them N
seconds, ``null`` keeps them for good, anything else leaves the server default."""

from __future__ import annotations

import json
from dataclasses import dataclass

from openfal.errors import BadRequest


@dataclass(frozen=True, slots=True)
class MediaLifecycle:
    #: seconds to keep the files; None for the server's ``media_ttl_seconds``
    ttl: float | None = None
    keep_forever: bool = False


DEFAULT = MediaLifecycle()


def parse_lifecycle(raw: str | None) -> MediaLifecycle:
    """The preference in a header value; a value that is not a JSON object is a 400."""
    if not raw:
        return DEFAULT
    try:
        preference = json.loads(raw)
    except ValueError:
        preference = None
    if not isinstance(preference, dict):
        raise BadRequest("X-Fal-Object-Lifecycle(-Preference) must be a JSON object") from None
    value = preference.get("expiration_duration_seconds", "absent")
    if value is None:
        return MediaLifecycle(keep_forever=True)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return MediaLifecycle(ttl=float(value))
    return DEFAULT
