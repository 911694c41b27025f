"""How the relay reads an upstream's status codes for trying again, and how it spaces tries."""

from __future__ import annotations

import pytest

from openfal.backends.relay.retry import TRY_AGAIN, Answer, classify


@pytest.mark.parametrize("code", [200, 201, 202, 204])
def test_2xx_is_ok(code: int) -> None:
    assert classify(code) is Answer.OK


@pytest.mark.parametrize("code", [401, 403])
def test_401_and_403_are_a_refused_key(code: int) -> None:
    assert classify(code) is Answer.AUTH_FAILED


@pytest.mark.parametrize("code", [404, 410])
def test_404_and_410_mean_the_request_is_gone(code: int) -> None:
    assert classify(code) is Answer.GONE


@pytest.mark.parametrize("code", [408, 409, 429])
def test_fals_try_again_codes_are_rate_limited(code: int) -> None:
    assert classify(code) is Answer.RATE_LIMITED


@pytest.mark.parametrize("code", [500, 502, 503, 504, 599])
def test_5xx_is_retryable(code: int) -> None:
    assert classify(code) is Answer.RETRYABLE


@pytest.mark.parametrize("code", [400, 402, 413, 422, 425, 499])
def test_other_4xx_are_fatal(code: int) -> None:
    assert classify(code) is Answer.FATAL


@pytest.mark.parametrize("code", [100, 301, 302, 307])
def test_1xx_and_3xx_are_unexpected(code: int) -> None:
    assert classify(code) is Answer.UNEXPECTED


def test_only_rate_limited_and_retryable_answers_are_tried_again() -> None:
    assert {Answer.RATE_LIMITED, Answer.RETRYABLE} == TRY_AGAIN
