"""One table from exceptions to fal-shaped responses, looked up along the MRO."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from openfal.errors import ClientError, InputInvalid


def _client_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClientError)
    body: dict[str, Any] = {"detail": exc.message}
    headers = {}
    if exc.error_type:
        body["error_type"] = exc.error_type
        headers["X-Fal-Error-Type"] = exc.error_type
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def _input_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputInvalid)
    return JSONResponse({"detail": exc.detail}, status_code=422, headers={"x-fal-billable-units": "0"})


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.status_code != 404 else f"Path {request.url.path} not found"
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


HANDLERS = {
    InputInvalid: _input_invalid,
    ClientError: _client_error,
    RequestValidationError: _validation,
    HTTPException: _http,
}
