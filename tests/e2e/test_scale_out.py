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
def test_nothing_is_lost_or_completed_twice_when_processes_are_killed() -> None:
    """300 requests from 16 clients (some of them tiny FLUX images written to S3) all end
    COMPLETED and are settled exactly once at their price; the requests the killed
    worker held are retried once their leases expire. A lost request ends the soak
    after two minutes, not at the test timeout."""
    report = asyncio.run(soak(300, 16, image_share=0.05))
    assert report.problems == [], report.printed
    figures = report.figures
    assert figures["killed_retried"], report.printed
    assert figures["images_ok"] > 0 and figures["images_missing_in_s3"] == [], report.printed
    assert figures["charged"] == figures["charged_expected"] > 0, report.printed
    assert figures["balance"] == figures["credit"] - figures["charged"] == figures["journal"], report.printed
