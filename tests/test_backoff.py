"""The one backoff (relay calls and webhook deliveries) and the webhook retry policy, as
pure functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from openfal.backoff import Backoff
from openfal.webhooks import retry_at
from tests.support import make_settings


def test_backoff_doubles_from_its_base_up_to_its_cap() -> None:
    assert [Backoff(0.5, 3.0).delay(attempt) for attempt in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_takes_its_factor() -> None:
    assert [Backoff(1.0, 100.0, factor=3.0).delay(attempt) for attempt in range(3)] == [1.0, 3.0, 9.0]


def test_backoff_grows_a_wait_by_its_factor_and_never_from_below_its_base() -> None:
    backoff = Backoff(0.2, 1.0, factor=1.5)
    assert backoff.grow(0.4) == pytest.approx(0.6)
    assert backoff.grow(0.0) == pytest.approx(0.3)
    assert backoff.grow(0.9) == 1.0


def test_jitter_spreads_each_wait_around_the_plain_one() -> None:
    backoff = Backoff(10.0, 100.0, jitter=0.2)
    for attempt, plain in enumerate([10.0, 20.0, 40.0, 80.0, 100.0]):
        waits = {backoff.delay(attempt) for _ in range(50)}
        assert all(0.8 * plain <= w <= 1.2 * plain for w in waits) and len(waits) > 1


def test_a_webhook_is_retried_with_growing_waits_until_its_attempts_are_spent(tmp_path: Path) -> None:
    """15 s after the first failure, doubling to the cap, ±20 %; none after the last attempt."""
    settings = make_settings(tmp_path, webhook_base_delay_seconds=15, webhook_max_delay_seconds=2400, webhook_max_attempts=10)
    for attempts, plain in [(1, 15), (2, 30), (3, 60), (9, 2400)]:
        due = retry_at(attempts, settings, now=1000.0)
        assert due is not None and 0.8 * plain <= due - 1000.0 <= 1.2 * plain
    assert retry_at(10, settings, now=1000.0) is None
