"""Whose data a Platform API call may read: a user key its own (usage, requests, files),
an admin key (or a server with auth off) everyone's. The one place that decides it."""

from __future__ import annotations

from openfal.errors import Forbidden
from openfal.models import ApiKey


def sees_all(caller: ApiKey | None) -> bool:
    return caller is None or caller.is_admin


def owner_filter(caller: ApiKey | None, requested: str | None = None) -> str | None:
    """The key a report is limited to (None: every key). A user key asking for another
    key's data is refused, not quietly shown its own."""
    if sees_all(caller):
        return requested
    assert caller is not None
    if requested is not None and requested != caller.id:
        raise Forbidden("An API-scope key sees only its own usage, requests and files; this needs an admin key")
    return caller.id


def require_admin(caller: ApiKey | None) -> None:
    if not sees_all(caller):
        raise Forbidden("This route needs an admin key (fal's ADMIN scope)")


def may_read_owned(caller: ApiKey | None, owner_key_id: str | None) -> bool:
    """Whether the caller may act on something a key owns (a request, a file)."""
    return sees_all(caller) or (caller is not None and owner_key_id == caller.id)
