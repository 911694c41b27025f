"""The upstream keys of one relay and their health.

A key that the upstream rate-limited (429), failed (5xx) or refused (401/403) is left
out for a cool-down that doubles with each failure in a row and resets on success.
New work goes to healthy keys in turn; follow-ups of a submitted request always use
the key that submitted it (the pin is stored with the request), cooling or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from openfal.backends.relay.config import UpstreamConfig, key_id
from openfal.backoff import Backoff


@dataclass
class KeyHealth:
    id: str
    secret: str
    failures: int = 0
    cooling_until: float = 0.0
    last_problem: str | None = None


class KeyPool:
    def __init__(self, config: UpstreamConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.keys = [KeyHealth(key_id(k), k) for k in config.keys]
        self._next = 0

    def get(self, id: str) -> KeyHealth | None:
        return next((k for k in self.keys if k.id == id), None)

    def pick(self, exclude: set[str] = frozenset()) -> KeyHealth | None:  # type: ignore[assignment]
        """The next healthy key in turn (not in ``exclude``), or None while all cool down."""
        now = self.clock()
        for offset in range(len(self.keys)):
            key = self.keys[(self._next + offset) % len(self.keys)]
            if key.cooling_until <= now and key.id not in exclude:
                self._next = (self._next + offset + 1) % len(self.keys)
                return key
        return None

    def ready_in(self) -> float:
        """Seconds until the first key leaves its cool-down (0: one is ready now)."""
        now = self.clock()
        return max(0.0, min(k.cooling_until for k in self.keys) - now)

    def succeeded(self, key: KeyHealth) -> None:
        key.failures = 0
        key.cooling_until = 0.0
        key.last_problem = None

    def failed(self, key: KeyHealth, problem: str, *, auth: bool = False) -> float:
        """Cool the key down; returns the cool-down in seconds."""
        key.failures += 1
        key.last_problem = problem
        seconds = self.config.auth_cooldown if auth else Backoff(self.config.cooldown, self.config.cooldown_max).delay(key.failures - 1)
        key.cooling_until = self.clock() + seconds
        return seconds

    def snapshot(self) -> list[dict[str, object]]:
        """Health per key id (no secrets), for logs and operators."""
        now = self.clock()
        return [
            {"key": k.id, "failures": k.failures, "cooling_for": round(max(0.0, k.cooling_until - now), 1), "problem": k.last_problem}
            for k in self.keys
        ]
