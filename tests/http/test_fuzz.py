"""Property-based fuzzing of the submit routes and the admin API, in process, on SQLite
and PostgreSQL: no generated request gets a 5xx, and nothing accepted becomes a record
that later fails to read back (issue 8).

hypothesis drives a synchronous test, so the app runs on an event loop of its own in a
thread and each call is handed to it. The seed is fixed and the examples bounded, so a
run is repeatable and takes seconds; the strategies lean on what broke before: NUL and
lone surrogates, deep nesting, numbers past every column's range, NaN and Infinity,
hostile header values."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from openfal.backends.builtin import BuiltinBackend
from openfal.backends.local import LocalBackend
from tests.support import create_pg_database, drop_pg_database, make_settings, pg_database_url, running_app

EXAMPLES = 120
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)

HOSTILE_TEXT = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfffy", "\r\n", "\u202e", "😀", "", " " * 300, "%00", "../.."])
TEXT = st.one_of(st.text(max_size=40), HOSTILE_TEXT)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=2**31 - 2, max_value=2**64),
    st.integers(max_value=-(2**31) + 2, min_value=-(2**64)),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4), max_leaves=20)


@st.composite
def bodies(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> bytes:
    """A JSON body (or, at times, something that is not quite JSON): known fields with
    hostile values, unknown fields, deep nesting, raw bytes."""
    kind = draw(st.sampled_from(["object", "object", "object", "deep", "raw", "scalar"]))
    if kind == "deep":
        depth = draw(st.integers(min_value=30, max_value=3000))
        return b'{"prompt": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "raw":
        return draw(st.binary(max_size=200))
    if kind == "scalar":
        return json.dumps(draw(JSON_VALUES)).encode()
    body = {name: draw(st.one_of(strategy, JSON_VALUES)) for name, strategy in fields.items() if draw(st.booleans())}
    body.update(draw(st.dictionaries(TEXT, JSON_VALUES, max_size=3)))
    return json.dumps(body).encode()  # ensure_ascii: lone surrogates travel as \ud800, NaN as NaN


FLUX_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "prompt": TEXT,
    "image_size": st.one_of(
        st.sampled_from(["square_hd", "square", "portrait_4_3", "landscape_16_9", "nope"]),
        st.fixed_dictionaries({"width": NUMBERS, "height": NUMBERS}),
    ),
    "num_inference_steps": NUMBERS,
    "num_images": NUMBERS,
    "seed": NUMBERS,
    "guidance_scale": NUMBERS,
    "image_url": st.one_of(TEXT, st.sampled_from(["data:image/png;base64,AAAA", "http://127.0.0.1/x.png", "file:///etc/passwd"])),
    "sync_mode": st.one_of(st.booleans(), TEXT),
    "output_format": st.one_of(st.sampled_from(["jpeg", "png", "gif"]), TEXT),
    "loras": st.lists(
        st.fixed_dictionaries({"path": st.one_of(TEXT, st.sampled_from(["https://x.test/a.bin", "style", "https://x.test/a.safetensors"])), "scale": NUMBERS}),
        max_size=10,
    ),
}
HEADER_TEXT = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.sampled_from(["-1", "0", "1e309", "nan", "99999999999999999999", "low", "normal", "{}", "null", '{"expiration_duration_seconds": -5}']),
)
HEADERS = st.dictionaries(
    st.sampled_from(
        ["x-fal-queue-priority", "x-fal-request-timeout", "x-fal-store-io", "x-fal-no-retry", "x-fal-object-lifecycle-preference", "idempotency-key"]
    ),
    HEADER_TEXT,
    max_size=3,
)
def _sendable(text: str) -> bool:
    """What an HTTP client can put in a URL (a lone surrogate has no UTF-8 to send)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


QUERY_TEXT = st.one_of(HEADER_TEXT, TEXT, st.sampled_from(["http://☃.com/", "https://example.com/hook", "javascript:x", "http://[::1"])).filter(_sendable)
QUERY = st.dictionaries(st.sampled_from(["fal_webhook", "fal_max_queue_length"]), QUERY_TEXT, max_size=2)
SUBMIT_PATHS = st.sampled_from(
    [
        "/openfal/utils/echo",
        "/run/openfal/utils/echo",
        "/openfal/utils/sleep",
        "/fal-ai/flux-1/dev",
        "/fal-ai/flux-1/schnell",
        "/fal-ai/flux-1/dev/image-to-image",
        "/fal-ai/flux-pro/kontext",
        "/fal-ai/flux-pro/kontext/multi",
        "/fal-ai/ltx-video",
        "/fal-ai/wan/v2.2-a14b/text-to-video",
        "/fal-ai/flux-lora",
        "/fal-ai/flux-kontext-lora",
        "/fal-ai/flux-kontext/dev",
        "/fal-ai/flux/dev",
    ]
)
KEY_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": TEXT,
    "admin": st.one_of(st.booleans(), TEXT),
    "max_concurrent": NUMBERS,
    "rpm": NUMBERS,
    "credit": NUMBERS,
    "endpoints": st.one_of(st.lists(TEXT, max_size=3), TEXT),
    "expires_at": NUMBERS,
}


class LoopThread:
    """An event loop in a thread, running the app for a synchronous test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class FuzzTarget:
    """The in-process app (echo and sleep run on a builtin worker; the FLUX endpoints are
    routed to a local backend that no worker serves, so only submit runs for them)."""

    def __init__(self, tmp_path: Path, database_url: str | None) -> None:
        self.loops = LoopThread()
        overrides: dict[str, Any] = {"worker_backends": ("builtin",), "demo": True}
        if database_url:
            overrides["database_url"] = database_url
        settings_ = make_settings(tmp_path, **overrides)
        self._context = running_app(settings_, {"builtin": BuiltinBackend(), "local": LocalBackend(settings_)})
        self.app = self.loops.run(self._context.__aenter__())
        self.admin = {"Authorization": f"Key {self.loops.run(self.app.key('fuzz-admin', admin=True))}"}
        self.user = {"Authorization": f"Key {self.loops.run(self.app.key('fuzz-user'))}"}

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loops.run(self.app.client.request(method, url, **kwargs))

    def close(self) -> None:
        self.loops.run(self._context.__aexit__(None, None, None))
        self.loops.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], scope="module")
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    name = asyncio.run(create_pg_database()) if request.param == "postgresql" else None
    fuzz = FuzzTarget(tmp_path_factory.mktemp("fuzz"), pg_database_url(name) if name else None)
    try:
        yield fuzz
    finally:
        fuzz.close()
        if name:
            asyncio.run(drop_pg_database(name))


def no_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text[:300]}"


def test_no_generated_submit_gets_a_server_error_or_stores_what_cannot_be_read(target: FuzzTarget) -> None:
    @FUZZ
    @seed(8)
    @given(path=SUBMIT_PATHS, body=bodies(FLUX_FIELDS), headers=HEADERS, query=QUERY)
    def check(path: str, body: bytes, headers: dict[str, str], query: dict[str, str]) -> None:
        sent = {**target.user, **headers, "content-type": "application/json"}
        response = target.call("POST", path, content=body, headers=sent, params=query)
        no_server_error(response)
        if response.status_code == 200 and "request_id" in response.json():
            status_url = httpx.URL(response.json()["status_url"]).path
            no_server_error(target.call("GET", status_url, headers=target.user, params={"logs": "1"}))
            no_server_error(target.call("GET", httpx.URL(response.json()["response_url"]).path, headers=target.user))

    check()


def test_no_generated_admin_call_gets_a_server_error_or_leaves_a_key_without_its_limits(target: FuzzTarget) -> None:
    @FUZZ
    @seed(9)
    @given(body=bodies(KEY_FIELDS), limits=bodies(KEY_FIELDS), credit=bodies({"amount": NUMBERS}))
    def check(body: bytes, limits: bytes, credit: bytes) -> None:
        before = {k["id"] for k in target.call("GET", "/api/admin/keys", headers=target.admin).json()}
        made = target.call("POST", "/api/admin/keys", content=body, headers={**target.admin, "content-type": "application/json"})
        no_server_error(made)
        after = {k["id"]: k for k in target.call("GET", "/api/admin/keys", headers=target.admin).json()}
        if made.status_code != 200:
            assert set(after) == before, f"a refused create left a key behind: {made.text[:200]}"
            return
        key_id = made.json()["id"]
        sent = json.loads(body)
        for field in ("max_concurrent", "rpm"):
            assert after[key_id][field] == sent.get(field), f"{field} not stored with the key"
        for method, url, content in [
            ("PATCH", f"/api/admin/keys/{key_id}", limits),
            ("POST", f"/api/admin/keys/{key_id}/credit", credit),
            ("POST", f"/api/admin/keys/{uuid.uuid4().hex[:16]}/revoke", b""),
        ]:
            no_server_error(target.call(method, url, content=content, headers={**target.admin, "content-type": "application/json"}))

    check()


def test_no_generated_query_of_the_read_apis_gets_a_server_error(target: FuzzTarget) -> None:
    params = st.dictionaries(
        st.sampled_from(["limit", "before", "status", "endpoint_id", "key_id", "since", "until", "period", "state", "request"]),
        st.one_of(QUERY_TEXT, NUMBERS.map(str)),
        max_size=4,
    )

    @FUZZ
    @seed(10)
    @given(path=st.sampled_from(["/api/requests", "/api/admin/usage", "/api/admin/webhooks", "/api/me"]), query=params)
    def check(path: str, query: dict[str, str]) -> None:
        no_server_error(target.call("GET", path, params=query, headers=target.admin))

    check()
