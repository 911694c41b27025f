"""The one backoff: how long to wait before trying again. The relay spaces its upstream
calls with it (no jitter: one worker's polls of one request), webhook deliveries too
(with jitter, so the receivers of a burst that failed together are not retried together)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential waits from ``base``, multiplied by ``factor`` each time, at most ``cap``;
    with ``jitter`` j, each wait is drawn from [1 - j, 1 + j] times that."""

    base: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (0: the first retry)."""
        return self._spread(min(self.base * self.factor**attempt, self.cap))

    def grow(self, seconds: float) -> float:
        """The wait after one of ``seconds`` (never less than ``base`` grown once)."""
        return self._spread(min(max(seconds, self.base) * self.factor, self.cap))

    def _spread(self, seconds: float) -> float:
        return seconds * random.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else seconds
