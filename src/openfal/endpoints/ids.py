"""fal endpoint ids and request paths.

An endpoint id is ``owner/app[/path...]``; its *app* is ``owner/app`` (or
``ns/owner/app`` for the ``workflows`` and ``comfy`` namespaces). Status, result and
cancel use the app only, so a request submitted to ``fal-ai/flux-1/dev`` is found under
``fal-ai/flux-1/requests/{id}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

NAMESPACES = ("workflows", "comfy")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]*$")
_LEGACY = re.compile(r"^\d+-[A-Za-z0-9-]+$")
#: request ids are openfal's UUIDs; anything else (a control character, a 10 kB string)
#: names no request and is never echoed into a header
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")

RequestAction = Literal["result", "status", "stream", "cancel"]


def app_of(endpoint_id: str) -> str:
    """The app that owns an endpoint: the part requests are looked up under."""
    parts = endpoint_id.strip("/").split("/")
    size = 3 if parts[0] in NAMESPACES else 2
    return "/".join(parts[:size])


def normalize_endpoint(path: str) -> str | None:
    """The endpoint id a submit path names, or None when it cannot be one."""
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) == 1 and _LEGACY.match(parts[0]):
        parts = parts[0].split("-", 1)
    minimum = 3 if parts and parts[0] in NAMESPACES else 2
    if len(parts) < minimum or not all(_SEGMENT.match(p) for p in parts):
        return None
    if "requests" in parts[: minimum + 1]:  # {app}/requests/... is the queue's, never an endpoint
        return None
    return "/".join(parts)


@dataclass(frozen=True, slots=True)
class RequestPath:
    app: str
    request_id: str
    action: RequestAction


def parse_request_path(path: str) -> RequestPath | None:
    """``{app}/requests/{id}[/status[/stream]|/cancel]``, trailing slashes tolerated. The
    full endpoint id in place of the app (``fal-ai/flux-1/dev/requests/{id}``, the URL a
    reader builds from the id they submitted to) names the same request: requests are
    found from their app, whatever subpath they were submitted to."""
    parts = [p for p in path.strip("/").split("/") if p]
    size = 3 if parts and parts[0] in NAMESPACES else 2
    at = next((i for i in range(size, len(parts) - 1) if parts[i] == "requests"), None)
    if at is None or not all(_SEGMENT.match(p) for p in parts[size:at]):
        return None
    app, request_id, rest = "/".join(parts[:size]), parts[at + 1], parts[at + 2 :]
    actions: dict[tuple[str, ...], RequestAction] = {
        (): "result",
        ("status",): "status",
        ("status", "stream"): "stream",
        ("cancel",): "cancel",
    }
    action = actions.get(tuple(rest))
    if action is None or not _REQUEST_ID.match(request_id):
        return None
    return RequestPath(app, request_id, action)
