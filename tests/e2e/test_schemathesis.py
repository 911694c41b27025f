"""Property-based fuzzing of openfal's own OpenAPI with schemathesis against a real
server process: no generated request may produce a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.e2e.conftest import Server


def test_no_generated_request_gets_a_server_error(server: Server) -> None:
    """For every operation of /openapi.json, 30 generated requests (with a valid key) never get a 5xx."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    headers = {"Authorization": f"Key {server.key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=server.url, headers=headers, timeout=30)
            case.validate_response(response, checks=(not_a_server_error,))

        try:
            check()
        except Exception as exc:
            pytest.fail(f"{operation.label}: {exc}")
