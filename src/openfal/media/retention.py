"""fal's object lifecycle preference (``X-Fal-Object-Lifecycle`` on uploads,
``X-Fal-Object-Lifecycle-Preference`` on submits): how long the files a request makes
or a client uploads are kept. ``{"expiration_duration_seconds": N}`` keeps them N
seconds, ``null`` keeps them for good, anything else leaves the default (the key's
storage settings, else the server's). ``initial_acl`` gives the files an ACL
(``openfal.media.access``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from openfal.errors import BadRequest, InputInvalid
from openfal.media.access import parse_acl


@dataclass(frozen=True, slots=True)
class MediaLifecycle:
    #: seconds to keep the files; None for the server's ``media_ttl_seconds``
    ttl: float | None = None
    keep_forever: bool = False
    #: the ACL the files start with; None: the key's storage settings decide
    acl: dict[str, Any] | None = None

    @property
    def keeps_default(self) -> bool:
        """Whether no expiry was asked for (the key's storage settings then apply)."""
        return self.ttl is None and not self.keep_forever

    def over(self, defaults: MediaLifecycle) -> MediaLifecycle:
        """This preference, with what it leaves open taken from ``defaults``."""
        ttl, forever = (defaults.ttl, defaults.keep_forever) if self.keeps_default else (self.ttl, self.keep_forever)
        return MediaLifecycle(ttl=ttl, keep_forever=forever, acl=self.acl if self.acl is not None else defaults.acl)


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
    acl = preference.get("initial_acl")
    if acl is not None:
        try:
            acl = parse_acl(acl, "header")
        except InputInvalid as exc:
            raise BadRequest(f"X-Fal-Object-Lifecycle(-Preference) initial_acl: {exc.detail[0]['msg']}") from None
    value = preference.get("expiration_duration_seconds", "absent")
    if value is None:
        return MediaLifecycle(keep_forever=True, acl=acl)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return MediaLifecycle(ttl=float(value), acl=acl)
    return MediaLifecycle(acl=acl)
