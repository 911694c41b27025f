"""One table from exceptions to fal-shaped responses, looked up along the MRO."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from openfal.errors import ClientError, InputInvalid

log = logging.getLogger("openfal.http")


def internal_error() -> JSONResponse:
    """fal's shape for an unexpected error (openfal's own fault)."""
    return JSONResponse(
        {"detail": "Internal Server Error", "error_type": "internal_error"}, status_code=500, headers={"X-Fal-Error-Type": "internal_error"}
    )


def _client_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClientError)
    return client_error(exc)


def client_error(exc: ClientError) -> JSONResponse:
    """fal's shape for a client error (also answered where no route runs yet)."""
    body: dict[str, Any] = {"detail": exc.message}
    headers = {}
    if exc.error_type:
        body["error_type"] = exc.error_type
        headers["X-Fal-Error-Type"] = exc.error_type
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def _input_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputInvalid)
    headers = {"x-fal-billable-units": "0"}
    if exc.error_type:
        headers["X-Fal-Error-Type"] = exc.error_type
    return JSONResponse({"detail": exc.detail}, status_code=422, headers=headers)


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.status_code != 404 else f"Path {request.url.path} not found"
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


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
        return JSONResponse({"detail": detail}, status_code=422)
    if isinstance(exc, _OUR_FAULTS):
        log.error("database error on %s %s", request.method, request.url.path, exc_info=exc)
        return internal_error()
    log.error("request store unavailable on %s %s: %s", request.method, request.url.path, exc)
    body = {"detail": "Service temporarily unavailable: the request store cannot be reached; retry shortly", "error_type": "store_unavailable"}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "2", "X-Fal-Error-Type": "store_unavailable"})


HANDLERS = {
    InputInvalid: _input_invalid,
    sa_exc.DBAPIError: _store_unavailable,
    sa_exc.TimeoutError: _store_unavailable,
    ConnectionError: _store_unavailable,
    ClientError: _client_error,
    RequestValidationError: _validation,
    HTTPException: _http,
}
