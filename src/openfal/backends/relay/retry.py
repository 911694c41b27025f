"""What an upstream's HTTP answer means for trying again, and how long to wait first.

Every relay loop that asks the upstream more than once (submit, status polls, result
fetch, cancel) reads a status code through ``classify`` and spaces its tries with
``openfal.backoff.Backoff``, so 429 means the same thing at submit as at the result fetch. 408, 409 and
429 are fal's "try again later" codes (its Python client retries them silently).
Two callers keep their older, narrower reading on top: the result fetch passes a 409
through as final, and a cancel is sent again only after a 429 or a 5xx.
"""

from __future__ import annotations

from enum import Enum


class Answer(Enum):
    OK = "ok"
    #: 401, 403: the upstream refuses the key, not the request
    AUTH_FAILED = "auth_failed"
    #: 404, 410: the upstream no longer knows the request
    GONE = "gone"
    #: 408, 409, 429: busy; the same call may work later
    RATE_LIMITED = "rate_limited"
    #: 5xx: the upstream is in trouble; the same call may work later
    RETRYABLE = "retryable"
    #: any other 4xx: the upstream refuses this call for good
    FATAL = "fatal"
    #: 1xx, 3xx: nothing a queue API answers (redirects are not followed)
    UNEXPECTED = "unexpected"


#: the answers after which the same call is worth making again
TRY_AGAIN = frozenset({Answer.RATE_LIMITED, Answer.RETRYABLE})


def classify(status_code: int) -> Answer:
    if 200 <= status_code < 300:
        return Answer.OK
    if status_code in {401, 403}:
        return Answer.AUTH_FAILED
    if status_code in {404, 410}:
        return Answer.GONE
    if status_code in {408, 409, 429}:
        return Answer.RATE_LIMITED
    if status_code >= 500:
        return Answer.RETRYABLE
    if 400 <= status_code < 500:
        return Answer.FATAL
    return Answer.UNEXPECTED
