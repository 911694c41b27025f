"""Mirroring an upstream request's status into openfal: queue position while the
upstream queues it, each upstream log line once, and progress when the upstream
reports it (another openfal does)."""

from __future__ import annotations

from collections import deque
from typing import Any

from openfal.backends.base import Job
from openfal.events import Log, Progress, QueuePosition

STATES = ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
LEVELS = {"STDERR", "STDOUT", "ERROR", "INFO", "WARN", "DEBUG"}


def valid_status(body: Any) -> bool:
    return isinstance(body, dict) and body.get("status") in STATES


class Mirror:
    """What has been passed on so far; ``apply`` passes on what is new."""

    def __init__(self, logs_seen: int = 0) -> None:
        self.status: str | None = None
        self.position: int | None = None
        self.progress: tuple[int, int] | None = None
        #: log entries passed on; the upstream answers every log so far on each poll
        self.logs_seen = logs_seen
        self._last_key: tuple[str, str, str] | None = None
        self._recent: deque[tuple[str, str, str]] = deque(maxlen=2000)

    def apply(self, job: Job, body: dict[str, Any]) -> bool:
        """Emit the news in one status body; True when anything changed."""
        status = body["status"]
        changed = status != self.status
        if changed and self.status == "IN_QUEUE":
            job.emit(QueuePosition(None))  # left the upstream's queue: we are IN_PROGRESS again
            self.position = None
        self.status = status
        if status == "IN_QUEUE":
            position = body.get("queue_position")
            if isinstance(position, int) and not isinstance(position, bool) and position >= 0 and position != self.position:
                self.position = position
                job.emit(QueuePosition(position))
                changed = True
        logs = body.get("logs")
        if isinstance(logs, list) and logs:
            for entry in self._new_logs(logs):
                job.emit(Log(str(entry.get("message", "")), _level(entry)))
                changed = True
        progress = body.get("progress")
        if isinstance(progress, dict):
            step, total = progress.get("step"), progress.get("total")
            if isinstance(step, int) and isinstance(total, int) and total > 0 and (step, total) != self.progress:
                self.progress = (step, total)
                job.emit(Progress(step, total))
                changed = True
        return changed

    def _new_logs(self, logs: list[Any]) -> list[dict[str, Any]]:
        entries = [e for e in logs if isinstance(e, dict)]
        keys = [_key(e) for e in entries]
        cumulative = len(entries) >= self.logs_seen and (
            self.logs_seen == 0 or self._last_key is None or keys[self.logs_seen - 1] == self._last_key
        )
        if cumulative:
            fresh = list(range(self.logs_seen, len(entries)))
            self.logs_seen = len(entries)
        else:  # an upstream that sends only recent lines: skip the ones already seen
            seen = set(self._recent)
            fresh = [i for i, k in enumerate(keys) if k not in seen]
            self.logs_seen += len(fresh)
        if keys:
            self._last_key = keys[-1]
        for i in fresh:
            self._recent.append(keys[i])
        return [entries[i] for i in fresh]


def _key(entry: dict[str, Any]) -> tuple[str, str, str]:
    return (str(entry.get("timestamp", "")), str(entry.get("message", "")), str(entry.get("level", "")))


def _level(entry: dict[str, Any]) -> Any:
    level = entry.get("level")
    if not isinstance(level, str):
        labels = entry.get("labels")
        level = labels.get("level") if isinstance(labels, dict) else None
    level = level.upper() if isinstance(level, str) else "INFO"
    return level if level in LEVELS else "INFO"
