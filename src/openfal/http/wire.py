"""fal's wire format: a submit's headers and query parameters (fal-queue-api.md
section 1.2) parsed into typed ``SubmitOptions``, and the JSON shapes of submit, status
and logs (sections 1.3-1.5). A value that cannot be parsed is refused here, before
anything is stored, with the 400 or 422 fal answers."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from openfal.errors import BadRequest, InputInvalid
from openfal.media.retention import parse_lifecycle
from openfal.models import LogEntry, Priority, RequestRecord, Status
from openfal.service import StatusView, SubmitOptions
from openfal.webhooks import check_url

#: largest fal_max_queue_length accepted (any longer limit is no limit)
MAX_QUEUE_LENGTH = 10**9

#: longest Idempotency-Key accepted (the IETF draft and Stripe allow 255)
MAX_IDEMPOTENCY_KEY = 255

#: longest X-Fal-Request-Timeout accepted: a week
MAX_START_TIMEOUT = 86400 * 7


def submit_options(headers: Mapping[str, str], query: Mapping[str, str]) -> SubmitOptions:
    """A submit's options from fal's headers and query (``headers`` looked up in lower
    case, as Starlette's are). Checked in this order, so a request with several bad
    values is told of the first."""
    lifecycle = parse_lifecycle(headers.get("x-fal-object-lifecycle-preference"))
    idempotency_key = _idempotency_key(headers.get("idempotency-key"))
    priority = _priority(headers.get("x-fal-queue-priority"))
    webhook_url = _webhook_url(query.get("fal_webhook"))
    start_deadline = _start_deadline(headers.get("x-fal-request-timeout"))
    return SubmitOptions(
        priority=priority,
        start_deadline=start_deadline,
        webhook_url=webhook_url,
        max_queue_length=_max_queue_length(query.get("fal_max_queue_length")),
        store_io=headers.get("x-fal-store-io") not in {"0", "false"},
        no_retry=(headers.get("x-fal-no-retry") or "").lower() in {"1", "true", "yes"},
        lifecycle=lifecycle,
        idempotency_key=idempotency_key,
        runner_hint=_runner_hint(headers.get("x-fal-runner-hint")),
    )


#: a runner hint longer than this cannot name anything a worker advertises
MAX_RUNNER_HINT = 255


def _runner_hint(value: str | None) -> str | None:
    """fal's best-effort routing hint: matched exactly, so kept as sent (empty: none)."""
    if not value:
        return None
    if len(value) > MAX_RUNNER_HINT or not value.isprintable():
        raise BadRequest(f"X-Fal-Runner-Hint must be at most {MAX_RUNNER_HINT} printable characters")
    return value


def _idempotency_key(value: str | None) -> str | None:
    if value is not None and (not 0 < len(value) <= MAX_IDEMPOTENCY_KEY or not value.isprintable() or not value.isascii()):
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters")
    return value


def _priority(value: str | None) -> Priority:
    if value is None or value == "":
        return Priority.normal
    try:
        return Priority[value.strip().lower()]
    except KeyError:
        raise BadRequest(f"Invalid X-Fal-Queue-Priority {value!r}: use 'normal' or 'low'") from None


def _start_deadline(value: str | None) -> float | None:
    """Unix time by which the request must have started."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise BadRequest(f"Invalid X-Fal-Request-Timeout {value!r}: a number of seconds is expected") from None
    if not 0.1 < seconds <= MAX_START_TIMEOUT or seconds != seconds:
        raise BadRequest(f"X-Fal-Request-Timeout must be more than 0.1 and at most {MAX_START_TIMEOUT} seconds")
    return time.time() + seconds


def _webhook_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    try:
        check_url(value)  # as the deliverer's client will parse it
    except ValueError as exc:
        msg = f"Invalid fal_webhook URL {value[:200]!r}: {exc}"
        raise InputInvalid([{"loc": ["query", "fal_webhook"], "msg": msg, "type": "value_error"}], msg) from None
    return value


def _max_queue_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        maximum = int(value)
    except ValueError:
        maximum = -1
    if not 0 <= maximum <= MAX_QUEUE_LENGTH:
        raise InputInvalid(
            [{"loc": ["query", "fal_max_queue_length"], "msg": f"Input should be an integer from 0 to {MAX_QUEUE_LENGTH}", "type": "int_range"}]
        )
    return maximum


def request_urls(record: RequestRecord) -> dict[str, str]:
    base = f"{record.base_url}/{record.app}/requests/{record.id}"
    return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}


def submit_body(record: RequestRecord, position: int | None) -> dict[str, Any]:
    """fal's submit answer. A new request is always IN_QUEUE; an idempotent replay says
    where the earlier request is now (no queue_position once it has left the queue)."""
    body: dict[str, Any] = {
        "status": record.status.value,
        "request_id": record.id,
        "gateway_request_id": record.id,
        **request_urls(record),
    }
    if position is not None:
        body["queue_position"] = position
    return body


def log_json(entry: LogEntry) -> dict[str, Any]:
    """Flat fields (JS, Rust clients) plus ``labels`` (fal-java) in one object."""
    timestamp = datetime.fromtimestamp(entry.timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "message": entry.message,
        "level": entry.level,
        "source": "USER",
        "timestamp": timestamp,
        "labels": {"level": entry.level, "source": "USER"},
    }


def status_body(view: StatusView) -> tuple[int, dict[str, Any]]:
    """(HTTP code, body): 202 while pending, 200 once COMPLETED."""
    record = view.record
    status = record.status
    if status is Status.IN_PROGRESS and record.upstream_position is not None:
        status = Status.IN_QUEUE  # relayed and still queued upstream: say so
    body: dict[str, Any] = {"status": status.value, "request_id": record.id, **request_urls(record)}
    if status is Status.IN_QUEUE:
        body["queue_position"] = view.queue_position or 0
        if view.eta_seconds is not None and record.status is Status.IN_QUEUE:
            body["eta_seconds"] = view.eta_seconds  # openfal's extension; fal's clients ignore it
    else:
        body["logs"] = [log_json(e) for e in view.logs] if view.logs is not None else None
    if record.progress_total:
        body["progress"] = {"step": record.progress_step, "total": record.progress_total}
    if record.preview_url and status is Status.IN_PROGRESS:
        body["preview_url"] = record.preview_url
    if status is Status.COMPLETED:
        body["metrics"] = {"inference_time": record.inference_time} if record.inference_time is not None else {}
        if record.error is not None:
            body["error"] = record.error
            body["error_type"] = record.error_type
    return (200 if status is Status.COMPLETED else 202), body
