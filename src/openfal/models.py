"""Frozen domain values. Changes make copies; the store is the only writer."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any


class Status(str, enum.Enum):
    """fal's three states. Failures and cancels are COMPLETED with an error."""

    #: waiting for a worker (or for the upstream to start it)
    IN_QUEUE = "IN_QUEUE"
    #: a worker holds the lease and runs it
    IN_PROGRESS = "IN_PROGRESS"
    #: finished: a result, or an error with its status code
    COMPLETED = "COMPLETED"


class Priority(enum.IntEnum):
    """Lower runs first: a ``low`` request waits behind every ``normal`` one."""

    normal = 0
    low = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class LogEntry:
    timestamp: float
    message: str
    level: str = "INFO"


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """One queued request as the store holds it."""

    id: str
    seq: int
    app: str
    endpoint_id: str
    backend: str
    key_id: str | None
    status: Status
    priority: int
    input: dict[str, Any]
    base_url: str
    created_at: float
    batch_key: str | None = None
    webhook_url: str | None = None
    store_io: bool = True
    start_deadline: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    attempts: int = 0
    worker_id: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    progress_step: int | None = None
    progress_total: int | None = None
    preview_url: str | None = None
    upstream_position: int | None = None
    result_status: int | None = None
    result_body: Any = None
    result_headers: dict[str, str] | None = None
    error: str | None = None
    error_type: str | None = None
    inference_time: float | None = None
    backend_state: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    reserved_micros: int | None = None
    no_retry: bool = False
    media_ttl: float | None = None
    media_keep_forever: bool = False
    media_acl: dict[str, Any] | None = None
    #: X-Fal-Runner-Hint (best-effort routing to a worker advertising it)
    runner_hint: str | None = None
    idempotency_key: str | None = None
    idempotency_hash: str | None = None

    def may_retry(self, max_attempts: int) -> bool:
        """Whether a lost or retryable attempt may be queued again."""
        return not self.no_retry and self.attempts < max_attempts


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    id: str
    name: str
    created_at: float
    revoked_at: float | None = None
    is_admin: bool = False
    max_concurrent: int | None = None
    rpm: int | None = None
    balance_micros: int | None = None
    #: fnmatch patterns (``fal-ai/flux-1/*``) of the endpoints it may use; None: all
    endpoints: tuple[str, ...] | None = None
    expires_at: float | None = None
    #: requests it may have waiting in the queue at once; None: no limit
    max_queued: int | None = None
    #: only endpoints whose catalog licence allows commercial use
    commercial_only: bool = False

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def may_use(self, endpoint_id: str) -> bool:
        return self.endpoints is None or any(fnmatchcase(endpoint_id, pattern) for pattern in self.endpoints)


@dataclass(frozen=True, slots=True)
class MediaBlob:
    """A file a backend produced. ``data`` is bytes, or a path to a temporary file that
    the worker moves into the media store (for large downloads and videos)."""

    data: bytes | Path
    content_type: str
    file_name: str | None = None
    width: int | None = None
    height: int | None = None
    #: further fields of the file object to keep (a relayed video's ``duration``)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.data) if isinstance(self.data, bytes) else self.data.stat().st_size

    def read(self) -> bytes:
        return self.data if isinstance(self.data, bytes) else self.data.read_bytes()


@dataclass(frozen=True, slots=True)
class Usage:
    """What was delivered, priced by accounting. Billing counts images and megapixels
    from the published result itself, one way for every backend, so a backend reports
    only what the result cannot tell: the seconds of video it made."""

    images: int = 0
    megapixels: float = 0.0
    video_seconds: float = 0.0
