"""Events a backend reports while it runs a request.

Backends never touch the store: the worker hands each run an ``emit`` callback and
folds these values into the request's status, logs and SSE stream in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LogLevel = Literal["STDERR", "STDOUT", "ERROR", "INFO", "WARN", "DEBUG"]


@dataclass(frozen=True, slots=True)
class Log:
    """One line for the request's ``logs`` (fal's log entry)."""

    message: str
    level: LogLevel = "INFO"


@dataclass(frozen=True, slots=True)
class Progress:
    """``step`` of ``total`` units done (denoising steps for diffusion)."""

    step: int
    total: int


@dataclass(frozen=True, slots=True)
class Preview:
    """A cheap low-resolution look at the work in progress, for the playground."""

    data: bytes
    content_type: str = "image/jpeg"


@dataclass(frozen=True, slots=True)
class QueuePosition:
    """Where the request stands in a queue the backend waits on (relay: the upstream's);
    ``None`` when it has left that queue and is running."""

    position: int | None


Event = Log | Progress | Preview | QueuePosition
