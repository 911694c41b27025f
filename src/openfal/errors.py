"""The exception tree of openfal.

Each class's docstring is its default message. The HTTP layer maps the tree onto
fal-shaped responses in one table (``openfal.http.errors``); nothing else decides
status codes.

* OpenfalError
  + ClientError                 the caller's fault; answered at once with a 4xx
    - Unauthorized              401
    - RequestNotFound           404 (also: another key's request)
    - UnknownEndpoint           404
    - BadRequest                400, ``error_type: bad_request``
    - PayloadTooLarge           413
    - StillInProgress           400, result asked for before COMPLETED
    - QueueFull                 429, ``fal_max_queue_length`` or the key's ``max_queued`` exceeded
    - EndpointNotAllowed        403, the key is limited to other endpoints
    - LicenceNotAllowed         403, the key is limited to commercially licensed models
    - InsufficientCredit        403, the key's balance is spent
    - RateLimited               429, the key's requests per minute
    - Forbidden                 403, an admin route asked for with a user key
    - InputInvalid              422 with a pydantic-style ``detail`` list
      . IdempotencyConflict     422, an Idempotency-Key reused for other input
  + RunError                    a request failed while running; stored as its result
    - RunCancelled              499 client_cancelled
    - StartTimeout              504 request_timeout, ``X-Fal-Request-Timeout-Type: user``
    - RunTimedOut               504 request_timeout, ran past ``max_run_seconds``
    - ModelUnavailable          503, the weights are not installed
    - RunnerLost                503 runner_disconnected, the worker died and no attempts are left
    - InputFetchFailed          422, an ``image_url`` could not be fetched or decoded
    - InputRejected             422, valid by the schema but refused by the model (a LoRA file)
    - DeviceOutOfMemory         503, the device ran out of memory; the server keeps serving
    - SleepFailed               500, the utility sleep endpoint was asked to fail
    - InternalError             500 internal_error, an unexpected error in openfal (worker or relay)
    - UpstreamFailed            an upstream queue answered an error (its status code)
  + ConfigError                 the operator's settings cannot work
"""

from __future__ import annotations

from typing import Any

#: fal's request-error vocabulary (docs: model-apis/request-errors): every error openfal
#: answers carries one of these in its body's ``error_type`` and ``X-Fal-Error-Type``
FAL_ERROR_TYPES = frozenset(
    {
        "request_timeout",
        "startup_timeout",
        "runner_scheduling_failure",
        "runner_connection_timeout",
        "runner_disconnected",
        "runner_connection_refused",
        "runner_connection_error",
        "runner_incomplete_response",
        "runner_server_error",
        "internal_error",
        "client_disconnected",
        "client_cancelled",
        "bad_request",
    }
)


def error_type_for(status_code: int) -> str:
    """fal's error_type for an error status that names none of its own: a 4xx is the
    request's fault (``bad_request``; 499 a cancel), a 503 a runner that could not be
    had, a 504 a deadline, any other 5xx a failure while serving."""
    if status_code == 499:
        return "client_cancelled"
    if status_code == 504:
        return "request_timeout"
    if status_code == 503:
        return "runner_scheduling_failure"
    if 400 <= status_code < 500:
        return "bad_request"
    return "runner_server_error"


class OpenfalError(Exception):
    """An openfal error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self)


class ClientError(OpenfalError):
    """The request could not be accepted."""

    status_code = 400
    #: a 4xx is the request's fault: fal's ``bad_request`` (the status code and the
    #: detail say which fault)
    error_type = "bad_request"


class Unauthorized(ClientError):
    """Missing or invalid API key. Send `Authorization: Key <key>` or `Bearer <key>`."""

    status_code = 401


class RequestNotFound(ClientError):
    """Request not found."""

    status_code = 404


class UnknownEndpoint(ClientError):
    """Endpoint not found."""

    status_code = 404


class BadRequest(ClientError):
    """Malformed request."""

    status_code = 400
    error_type = "bad_request"


class PayloadTooLarge(ClientError):
    """Request body too large."""

    status_code = 413


class StillInProgress(ClientError):
    """Request is still in progress."""

    status_code = 400


class QueueFull(ClientError):
    """The queue is longer than fal_max_queue_length."""

    status_code = 429


class EndpointNotAllowed(ClientError):
    """The API key is scoped to other endpoints."""

    status_code = 403


class LicenceNotAllowed(ClientError):
    """The API key may only use models whose licence allows commercial use."""

    status_code = 403


class InsufficientCredit(ClientError):
    """User is locked. Reason: Exhausted balance. Top up the key's credit."""

    status_code = 403


class RateLimited(ClientError):
    """Rate limit exceeded: too many requests in the last minute for this key."""

    status_code = 429


class Forbidden(ClientError):
    """This route needs an admin key."""

    status_code = 403


class InputInvalid(ClientError):
    """Input validation failed."""

    status_code = 422

    def __init__(self, detail: list[dict[str, Any]], message: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail

    @classmethod
    def field(cls, field: str, msg: str, type_: str = "value_error", **extra: Any) -> InputInvalid:
        """One error on one body field (dotted for nested: ``loras.0.path``), in fal's
        FieldException shape."""
        return cls([{"loc": field_loc(field), "msg": msg, "type": type_, **extra}], msg)


class IdempotencyConflict(InputInvalid):
    """An Idempotency-Key was reused for a different endpoint or input."""

    #: 422, not 409: fal's Python client silently retries 408/409/429 for about 50 s

    def __init__(self, message: str | None = None) -> None:
        msg = message or (self.__doc__ or "").strip()
        super().__init__([{"loc": ["header", "Idempotency-Key"], "msg": msg, "type": "idempotency_conflict"}], msg)


class RunError(OpenfalError):
    """The request failed while running."""

    status_code = 500
    error_type = "runner_server_error"
    #: whether a fresh attempt could succeed (the queue retries only these)
    retryable = False

    def body(self) -> dict[str, Any]:
        """The result body stored for the request, as fal returns it."""
        return {"detail": self.message, "error_type": self.error_type}

    def headers(self) -> dict[str, str]:
        """A failed run bills nothing: ``x-fal-billable-units: 0`` (fal's apps send it on
        errors; fal-js reads it as a number)."""
        return {"X-Fal-Error-Type": self.error_type, "x-fal-billable-units": "0"}


class RunCancelled(RunError):
    """Request cancelled by the client."""

    status_code = 499
    error_type = "client_cancelled"


class StartTimeout(RunError):
    """The request did not start before its X-Fal-Request-Timeout deadline."""

    status_code = 504
    error_type = "request_timeout"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "X-Fal-Request-Timeout-Type": "user"}


class RunTimedOut(RunError):
    """The request ran longer than the server allows one run (``max_run_seconds``)."""

    status_code = 504
    error_type = "request_timeout"


class ModelUnavailable(RunError):
    """The model weights for this endpoint are not installed on this server."""

    status_code = 503
    error_type = "runner_scheduling_failure"


class RunnerLost(RunError):
    """The worker running this request stopped answering and no attempts are left."""

    status_code = 503
    error_type = "runner_disconnected"


def field_loc(field: str) -> list[str | int]:
    """``loras.0.path`` as pydantic spells a location: ``["body", "loras", 0, "path"]``."""
    return ["body", *(int(part) if part.isdigit() else part for part in field.split("."))]


class InputFetchFailed(RunError):
    """An input file could not be fetched."""

    status_code = 422
    error_type = "bad_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def body(self) -> dict[str, Any]:
        return {
            "detail": [
                {"loc": field_loc(self.field), "msg": self.message, "type": "file_download_error"}
            ]
        }


class InputRejected(RunError):
    """The input was accepted by the schema but refused by the model."""

    status_code = 422
    error_type = "bad_request"

    def __init__(self, detail: list[dict[str, Any]], message: str | None = None) -> None:
        super().__init__(message or (detail[0].get("msg") if detail else None))
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail}


class DeviceOutOfMemory(RunError):
    """The device ran out of memory for this request; the server keeps serving."""

    status_code = 503
    error_type = "runner_scheduling_failure"


class SleepFailed(RunError):
    """The sleep endpoint was asked to fail."""

    status_code = 500
    error_type = "runner_server_error"


class InternalError(RunError):
    """openfal failed to run this request (an unexpected error in openfal)."""

    status_code = 500
    error_type = "internal_error"


class UpstreamFailed(RunError):
    """The upstream queue failed this request."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 502,
        error_type: str = "runner_server_error",
        body: dict[str, Any] | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self._body = body
        self.retryable = retryable

    def body(self) -> dict[str, Any]:
        return self._body if self._body is not None else super().body()


class ConfigError(OpenfalError):
    """The configuration is invalid."""
