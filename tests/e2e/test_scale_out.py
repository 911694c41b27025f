"""Scale-out, proven with real processes: PostgreSQL + S3-compatible storage (moto's
server on loopback) + 2 API processes + 3 worker processes, with a worker and an API
process SIGKILLed mid-run. The full 2,000-request soak is benchmarks/soak.py; CI runs
the same code with fewer requests."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.soak import soak


@pytest.mark.postgres
@pytest.mark.slow
def test_nothing_is_lost_or_completed_twice_when_processes_are_killed(capsys: pytest.CaptureFixture[str]) -> None:
    """300 requests from 16 clients all end COMPLETED and are settled exactly once."""
    assert asyncio.run(soak(300, 16, image_share=0.0)) == 0, capsys.readouterr().out
