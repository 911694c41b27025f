"""Upstream answers turned into openfal's ``RunError``s, in fal's vocabulary.

* a failed upstream request: the same status code, body and error_type as upstream
* upstream unreachable, overloaded or broken: retryable, so the queue tries again
  later (resuming the same upstream request when one was accepted)
* the upstream refusing our key: an operator error, named as such
"""

from __future__ import annotations

import json
from typing import Any

from openfal.backends.relay.client import Reply
from openfal.backends.relay.retry import Answer
from openfal.errors import FAL_ERROR_TYPES, UpstreamFailed, error_type_for

#: (HTTP status, error_type) per kind of trouble, from fal's request-error table
TROUBLE = {
    "connection": (503, "runner_connection_error"),
    "busy": (503, "runner_scheduling_failure"),
    "server": (500, "runner_server_error"),
    "malformed": (502, "runner_incomplete_response"),
}


def trouble(kind: str, message: str, *, retryable: bool = True) -> UpstreamFailed:
    status, error_type = TROUBLE[kind]
    return UpstreamFailed(message, status_code=status, error_type=error_type, retryable=retryable)


def kind_of(answer: Answer) -> str:
    """The kind of trouble an HTTP error answer reports."""
    return "busy" if answer is Answer.RATE_LIMITED else "server"


def passthrough(reply: Reply, status: dict[str, Any] | None = None, *, scrub: tuple[str, str] | None = None) -> UpstreamFailed:
    """The upstream's failed result as this request's result: code, body, error_type.
    ``scrub`` = (upstream id, our id): the upstream's request id never reaches clients."""
    code = reply.status_code if reply.status_code >= 400 else 500
    body = reply.body if isinstance(reply.body, dict | list) else None
    status = status or {}
    error_type = status.get("error_type") or reply.headers.get("x-fal-error-type")
    if not error_type and isinstance(body, dict) and isinstance(body.get("error_type"), str):
        error_type = body["error_type"]
    error_type = error_type if error_type in FAL_ERROR_TYPES else error_type_for(code)
    message = status.get("error")
    if not isinstance(message, str) or not message:
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, str) and detail:
            message = detail
        elif isinstance(detail, list) and detail and isinstance(detail[0], dict) and isinstance(detail[0].get("msg"), str):
            message = detail[0]["msg"]
        else:
            message = f"The upstream request failed with HTTP {code}"
    if body is None:
        body = {"detail": message, "error_type": error_type}
    if scrub and scrub[0]:
        message = message.replace(*scrub)
        body = json.loads(json.dumps(body).replace(json.dumps(scrub[0])[1:-1], json.dumps(scrub[1])[1:-1]))
    return UpstreamFailed(message, status_code=code, error_type=error_type, body=body)  # type: ignore[arg-type]


def key_refused(upstream: str, status_code: int, *, retryable: bool = False) -> UpstreamFailed:
    return UpstreamFailed(
        f"Upstream {upstream!r} refused this server's API key (HTTP {status_code}); "
        f"the operator must check upstreams.{upstream}.keys",
        status_code=500,
        error_type="internal_error",
        retryable=retryable,
    )
