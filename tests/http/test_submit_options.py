"""fal's submit headers and query parameters, parsed at the wire into typed options
(http/wire.py): what the service gets, and what is refused before anything is stored."""

from __future__ import annotations

import json
import time

import pytest

from openfal.errors import BadRequest, InputInvalid
from openfal.http.wire import submit_options
from openfal.media.retention import MediaLifecycle
from openfal.models import Priority
from openfal.service import SubmitOptions


def test_no_headers_give_the_defaults() -> None:
    assert submit_options({}, {}) == SubmitOptions()


def test_every_option_arrives_typed() -> None:
    headers = {
        "x-fal-queue-priority": " LOW ",
        "x-fal-request-timeout": "30",
        "x-fal-store-io": "0",
        "x-fal-no-retry": "Yes",
        "x-fal-object-lifecycle-preference": json.dumps({"expiration_duration_seconds": 60}),
        "idempotency-key": "order-1",
    }
    query = {"fal_webhook": "https://example.com/hook", "fal_max_queue_length": "5"}
    before = time.time()
    options = submit_options(headers, query)
    assert options.priority is Priority.low
    assert before + 30 <= options.start_deadline <= time.time() + 30  # type: ignore[operator]
    assert (options.store_io, options.no_retry) == (False, True)
    assert options.lifecycle == MediaLifecycle(ttl=60.0)
    assert (options.webhook_url, options.max_queue_length, options.idempotency_key) == ("https://example.com/hook", 5, "order-1")


def test_a_bad_header_is_a_400_naming_it() -> None:
    with pytest.raises(BadRequest, match="X-Fal-Queue-Priority"):
        submit_options({"x-fal-queue-priority": "urgent"}, {})


def test_a_bad_query_parameter_is_a_422_at_its_loc() -> None:
    with pytest.raises(InputInvalid) as refused:
        submit_options({}, {"fal_max_queue_length": "many"})
    assert refused.value.detail[0]["loc"] == ["query", "fal_max_queue_length"]


def test_several_bad_values_are_told_of_the_first_checked() -> None:
    with pytest.raises(BadRequest, match="Idempotency-Key"):
        submit_options({"idempotency-key": "x" * 256, "x-fal-queue-priority": "urgent"}, {"fal_webhook": "ftp://x"})
