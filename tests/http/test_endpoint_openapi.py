"""Each endpoint's OpenAPI document (``/openapi/queue/openapi.json?endpoint_id=``) is a
valid OpenAPI document that OpenAPI tools accept (N11: it said 3.0.4 while pydantic's
schemas use 3.1's JSON Schema, so schemathesis refused to generate from it)."""

from __future__ import annotations

import pytest
import schemathesis
from openapi_spec_validator import validate

from openfal.endpoints.catalog import CATALOG
from tests.support import App


@pytest.mark.parametrize("endpoint_id", sorted(CATALOG))
async def test_the_endpoint_openapi_validates_and_generates_cases(app: App, endpoint_id: str) -> None:
    doc = (await app.client.get("/openapi/queue/openapi.json", params={"endpoint_id": endpoint_id})).json()
    validate(doc)
    for result in schemathesis.openapi.from_dict(doc).get_all_operations():
        result.ok().as_strategy().example()
