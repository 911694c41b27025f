"""Who may read a media file, as fal's storage API puts it: a per-file ACL
``{default: allow|forbid|hide, rules: [{user, decision}]}`` (``user`` is an openfal key
id), the file's owner and admin keys always allowed, and signed URLs that open one
file to anyone until they expire. ``forbid`` answers 403, ``hide`` 404 (as if the file
did not exist). A file without an ACL is public, as every file was before ACLs."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlencode

from pydantic import BaseModel, Field

from openfal.errors import InputInvalid
from openfal.models import ApiKey
from openfal.validation import Text, parse_body

Decision = Literal["allow", "forbid", "hide"]
#: fal's limit on a signed URL's life: 7 days
MAX_SIGNED_SECONDS = 7 * 86400
#: the query parameter a signed URL carries
SIGNATURE = "fal_signature"
#: a step preview's ACL: the request's own key (and admins) only, 404 to everyone else
#: whatever the request's initial_acl (a preview is drawn before the safety check)
OWNER_ONLY: dict[str, Any] = {"default": "hide", "rules": []}


def signed_url(base_url: str, media_key: str, signature: str) -> str:
    """A file's URL where openfal serves it (and checks its ACL), with a signature
    (``UploadSigner.file_signature``) that opens it until the signature expires."""
    return f"{base_url}/files/{media_key}?{urlencode({SIGNATURE: signature})}"


class Rule(BaseModel):
    user: Text = Field(min_length=1, max_length=64, description="the key id the rule is for")
    decision: Decision


class Acl(BaseModel):
    default: Decision = "allow"
    rules: list[Rule] = Field(default_factory=list, max_length=100)


def parse_acl(value: Any, where: str = "body") -> dict[str, Any]:
    """A validated ACL as stored (plain JSON)."""
    try:
        return parse_body(Acl, value).model_dump()
    except InputInvalid as exc:
        raise InputInvalid([{**d, "loc": [where, *d["loc"][1:]]} for d in exc.detail]) from None


def decide(acl: dict[str, Any] | None, owner: str | None, caller: ApiKey | None) -> Decision:
    """What ``caller`` (None: no key sent) gets for a file ``owner`` made."""
    if acl is None:
        return "allow"
    if caller is not None and (caller.is_admin or caller.id == owner):
        return "allow"
    if caller is not None:
        for rule in acl.get("rules") or []:
            if rule.get("user") == caller.id:
                return rule["decision"]
    return acl.get("default", "allow")
