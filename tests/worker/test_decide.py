"""How an attempt ends, as the pure policy ``decide`` states it: the claimed request, its
job (cancelled? stopped by the time limit?) and what the backend returned go in, a
decision comes out. No store, no I/O: what the decisions do to a stored request is
tested at the worker's boundary (test_worker_boundary.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

from openfal.attempt import Decision, Fail, Publish, Requeue, decide
from openfal.backends.base import Job, Output
from openfal.errors import RunCancelled, RunError, RunTimedOut
from openfal.models import RequestRecord, Status

MAX_ATTEMPTS = 3


class Flaky(RunError):
    """A failure a fresh attempt could get past (an upstream hiccup)."""

    retryable = True
    status_code = 502


class Broken(RunError):
    """A failure another attempt would repeat (a bad input)."""


class RetryableCancel(RunCancelled):
    retryable = True


def claimed(**overrides: Any) -> RequestRecord:
    """A request on its first attempt, with attempts left."""
    record = RequestRecord(
        id="req-1",
        seq=1,
        app="openfal",
        endpoint_id="openfal/utils/echo",
        backend="builtin",
        key_id=None,
        status=Status.IN_PROGRESS,
        priority=0,
        input={},
        base_url="http://test",
        created_at=0.0,
        attempts=1,
    )
    return dataclasses.replace(record, **overrides)


def running_job(*, cancelled: bool = False, timed_out: bool = False) -> Job:
    """A job as the worker holds it: cancelled by the client or by the time limit, or not."""
    made = Job(request_id="req-1", endpoint_id="openfal/utils/echo", input={})
    if cancelled:
        made.cancel()
    made.timed_out = timed_out
    return made


def decided(outcome: Output | RunError, *, record: RequestRecord | None = None, job: Job | None = None) -> Decision:
    return decide(record or claimed(), job or running_job(), outcome, max_attempts=MAX_ATTEMPTS, run_limit=90.0)


def test_an_output_of_a_job_still_running_is_published() -> None:
    output = Output({"echo": {}})
    assert decided(output) == Publish(output)


def test_an_output_that_came_back_after_a_cancel_ends_the_request_cancelled() -> None:
    decision = decided(Output({"echo": {}}), job=running_job(cancelled=True))
    assert isinstance(decision, Fail) and type(decision.error) is RunCancelled


def test_an_output_that_came_back_after_the_time_limit_stopped_it_ends_the_request_timed_out() -> None:
    decision = decided(Output({"echo": {}}), job=running_job(cancelled=True, timed_out=True))
    assert isinstance(decision, Fail) and isinstance(decision.error, RunTimedOut)


def test_a_cancelled_run_ends_the_request_with_its_cancel() -> None:
    cancel = RunCancelled()
    assert decided(cancel, job=running_job(cancelled=True)) == Fail(cancel)


def test_a_run_cancelled_by_the_time_limit_ends_timed_out_naming_the_limit() -> None:
    decision = decided(RunCancelled(), job=running_job(cancelled=True, timed_out=True))
    assert isinstance(decision, Fail) and isinstance(decision.error, RunTimedOut)
    assert decision.error.message == "The request ran longer than this server's limit of 90 s and was stopped"


def test_a_retryable_failure_with_attempts_left_is_requeued() -> None:
    error = Flaky("upstream hiccup")
    assert decided(error) == Requeue(error)


def test_a_retryable_failure_on_the_last_attempt_fails_the_request() -> None:
    error = Flaky("upstream hiccup")
    assert decided(error, record=claimed(attempts=MAX_ATTEMPTS)) == Fail(error)


def test_a_retryable_failure_of_a_request_that_asked_for_no_retry_fails_it() -> None:
    error = Flaky("upstream hiccup")
    assert decided(error, record=claimed(no_retry=True)) == Fail(error)


def test_a_failure_that_is_not_retryable_fails_the_request() -> None:
    error = Broken("bad input")
    assert decided(error) == Fail(error)


def test_a_cancel_is_never_retried_even_when_marked_retryable() -> None:
    cancel = RetryableCancel()
    assert decided(cancel, job=running_job(cancelled=True)) == Fail(cancel)
