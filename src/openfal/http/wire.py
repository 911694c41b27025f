"""JSON shapes: fal's for submit, status and logs (fal-queue-api.md sections 1.3-1.5),
and openfal's own for keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from openfal import accounting
from openfal.models import ApiKey, LogEntry, RequestRecord, Status
from openfal.service import StatusView


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


def key_json(key: ApiKey) -> dict[str, Any]:
    """A key as the admin API, the CLI and ``/api/me`` show it (never its secret)."""
    return {
        "id": key.id,
        "name": key.name,
        "admin": key.is_admin,
        "active": key.active,
        "created_at": key.created_at,
        "max_concurrent": key.max_concurrent,
        "max_queued": key.max_queued,
        "rpm": key.rpm,
        "balance": None if key.balance_micros is None else key.balance_micros / accounting.MICROS,
        "endpoints": list(key.endpoints) if key.endpoints is not None else None,
        "expires_at": key.expires_at,
    }
