"""One table from exceptions to fal-shaped responses, looked up along the MRO."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from openfal.errors import ClientError, InputInvalid, error_type_for

log = logging.getLogger("openfal.http")


def fal_error(body: Any, status_code: int, headers: Mapping[str, str] | None = None, *, error_type: str | None = None) -> dict[str, Any]:
    """An error body and headers as fal sends them: ``error_type`` (one of fal's 13) in
    a JSON object body and ``X-Fal-Error-Type``, and ``x-fal-billable-units: 0``
    (an error bills nothing). The one place error answers get them."""
    chosen = error_type or (headers or {}).get("X-Fal-Error-Type") or error_type_for(status_code)
    if isinstance(body, dict) and not body.get("error_type"):
        body = {**body, "error_type": chosen}
    elif isinstance(body, dict):
        chosen = body["error_type"]
    out = {"X-Fal-Error-Type": chosen, "x-fal-billable-units": "0"}
    for name, value in (headers or {}).items():
        if name.lower() not in {"x-fal-error-type", "x-fal-billable-units"}:
            out[name] = value
    return {"content": body, "status_code": status_code, "headers": out}


def error_response(body: Any, status_code: int, headers: Mapping[str, str] | None = None, *, error_type: str | None = None) -> JSONResponse:
    """A JSON error answer in fal's shape (see ``fal_error``)."""
    return JSONResponse(**fal_error(body, status_code, headers, error_type=error_type))


def internal_error() -> JSONResponse:
    """fal's shape for an unexpected error (openfal's own fault)."""
    return error_response({"detail": "Internal Server Error"}, 500, error_type="internal_error")


#: the Platform API's error ``type`` per status (``/v1``: fal's platform clients and
#: OpenAI's SDKs read an ``error: {type, message}`` object)
_PLATFORM_TYPES = {401: "authorization_error", 403: "authorization_error", 404: "not_found", 429: "rate_limited"}


def _client_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClientError)
    return client_error(exc, request.url.path)


def client_error(exc: ClientError, path: str) -> JSONResponse:
    """fal's shape for a client error to ``path`` (also answered where no route runs
    yet: http/guard.py)."""
    body: dict[str, Any] = {"detail": exc.message}
    if path.startswith("/v1/"):
        body["error"] = {"type": _PLATFORM_TYPES.get(exc.status_code, "validation_error"), "message": exc.message}
    return error_response(body, exc.status_code, error_type=exc.error_type)


def _input_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputInvalid)
    return error_response({"detail": exc.detail}, 422, error_type=exc.error_type)


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return error_response({"detail": detail}, 422)


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.status_code != 404 else f"Path {request.url.path} not found"
    return error_response({"detail": detail}, exc.status_code, exc.headers)


#: database errors that are openfal's own faults, not the database being unreachable
_OUR_FAULTS = (sa_exc.ProgrammingError, sa_exc.IntegrityError, sa_exc.DataError, sa_exc.NotSupportedError)


def _sqlstate(exc: Exception) -> str:
    return str(getattr(getattr(exc, "orig", None), "sqlstate", None) or "")


def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database cannot be reached (down, restarting, dropped, pool exhausted):
    nothing was stored, so the client may retry; a 503 in fal's shape rather than a 500.
    A value the database refuses (SQLSTATE class 22: a NUL byte, a number out of range)
    is no outage: that is the request's fault, a 422, and retrying would not help. The
    wire checks refuse such values first; this is the net under them."""
    if _sqlstate(exc).startswith("22"):
        log.warning("the database refused a value on %s %s: %s", request.method, request.url.path, getattr(exc, "orig", exc))
        detail = [{"loc": ["body"], "msg": "A value in this request cannot be stored (out of range or not valid text)", "type": "value_error"}]
        return error_response({"detail": detail}, 422)
    if isinstance(exc, _OUR_FAULTS):
        log.error("database error on %s %s", request.method, request.url.path, exc_info=exc)
        return internal_error()
    log.error("request store unavailable on %s %s: %s", request.method, request.url.path, exc)
    # nothing was stored and no runner could be given the request: fal's 503 for that
    body = {"detail": "Service temporarily unavailable: the request store cannot be reached; retry shortly"}
    return error_response(body, 503, {"Retry-After": "2"}, error_type="runner_scheduling_failure")


HANDLERS = {
    InputInvalid: _input_invalid,
    sa_exc.DBAPIError: _store_unavailable,
    sa_exc.TimeoutError: _store_unavailable,
    ConnectionError: _store_unavailable,
    ClientError: _client_error,
    RequestValidationError: _validation,
    HTTPException: _http,
}
