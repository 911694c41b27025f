"""Property-based fuzzing of the Platform API (/v1) and the storage access routes, in
process, on SQLite and PostgreSQL (the harness of test_fuzz.py): no generated query or
body gets a 5xx, and every error carries one of fal's error types."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import given, seed
from hypothesis import strategies as st

from openfal.errors import FAL_ERROR_TYPES
from tests.http.test_fuzz import FUZZ, JSON_VALUES, NUMBERS, QUERY_TEXT, TEXT, FuzzTarget, bodies, target  # noqa: F401

GET_PATHS = [
    "/v1/models",
    "/v1/models/pricing",
    "/v1/models/usage",
    "/v1/models/analytics",
    "/v1/models/requests/by-endpoint",
    "/v1/keys",
    "/v1/account/billing",
    "/v1/storage/settings",
    "/v1/storage/files/acl",
    "/v1/models/fal-ai/flux-1/dev",
]
PARAMS = st.dictionaries(
    st.sampled_from(
        ["endpoint_id", "q", "category", "status", "expand", "limit", "cursor", "start", "end", "timezone", "timeframe", "key_id", "request_id", "sort_by", "url"]
    ),
    st.one_of(
        QUERY_TEXT,
        NUMBERS.map(str),
        st.sampled_from(["2025-01-01", "2025-13-01", "1970-01-01T00:00:00Z", "Europe/Paris", "day", "month", "summary", "openapi-3.0", "MA==", "-1"]),
    ),
    max_size=5,
)
BODIES = {
    "/v1/models/pricing/estimate": {"estimate_type": st.sampled_from(["unit_price", "historical_api_price", "x"]), "endpoints": JSON_VALUES},
    "/v1/keys": {"alias": TEXT, "scope": st.sampled_from(["API", "ADMIN", "root"]), "credit": NUMBERS, "commercial_only": JSON_VALUES, "rpm": NUMBERS},
    "/v1/storage/settings": {"expiration_duration_seconds": NUMBERS, "initial_acl": JSON_VALUES},
}


def fal_shaped(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers["x-fal-error-type"] in FAL_ERROR_TYPES, response.text[:300]


def test_no_generated_query_of_the_platform_api_gets_a_server_error(target: FuzzTarget) -> None:  # noqa: F811
    @FUZZ
    @seed(26)
    @given(path=st.sampled_from(GET_PATHS), query=PARAMS, admin=st.booleans())
    def check(path: str, query: dict[str, str], admin: bool) -> None:
        fal_shaped(target.call("GET", path, params=query, headers=target.admin if admin else target.user))

    check()


def test_no_generated_body_of_the_platform_api_gets_a_server_error(target: FuzzTarget) -> None:  # noqa: F811
    @FUZZ
    @seed(27)
    @given(data=st.data(), path=st.sampled_from(sorted(BODIES)), admin=st.booleans())
    def check(data: Any, path: str, admin: bool) -> None:
        body = data.draw(bodies(BODIES[path]))
        method = "PUT" if path.startswith("/v1/storage") else "POST"
        headers = {**(target.admin if admin else target.user), "content-type": "application/json"}
        fal_shaped(target.call(method, path, content=body, headers=headers))
        acl = data.draw(bodies({"default": st.sampled_from(["allow", "hide", "forbid", "x"]), "rules": JSON_VALUES}))
        fal_shaped(target.call("PUT", "/v1/storage/files/acl", params={"url": data.draw(QUERY_TEXT) or "x"}, content=acl, headers=headers))
        fal_shaped(target.call("POST", "/v1/storage/files/sign", params={"url": "http://x/files/a"}, content=acl, headers=headers))
        request_id = quote(data.draw(QUERY_TEXT), safe="") or "x"
        fal_shaped(target.call("DELETE", f"/v1/models/requests/{request_id}/payloads", headers=headers))

    check()
