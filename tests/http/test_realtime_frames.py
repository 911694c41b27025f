"""Realtime frames are user data with bounds (realtime.py, http/realtime_routes.py): a
frame that is not one JSON-like object, past its size or nesting, or holding a msgpack
binary value gets an error frame and the socket lives on (N6: the socket was dropped
with no close code); the frames waiting on a socket are bounded in bytes as well as in
number (N5: 40 frames of 15 MiB took +700 MB on one socket). Driven through Starlette's
test client, which runs the app's WebSocket route in process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from openfal import realtime
from openfal.http import create_app
from openfal.runtime import Runtime
from tests.support import make_settings

ECHO = "/openfal/utils/echo/realtime"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = make_settings(tmp_path)
    runtime = Runtime(settings)
    with TestClient(create_app(settings, runtime=runtime)) as test_client:
        secret = test_client.portal.call(runtime.keys.create, "rt")[1]  # type: ignore[union-attr]
        yield test_client, {"Authorization": f"Key {secret}"}


def answered_after(socket: WebSocket, bad: dict[str, bytes | str]) -> tuple[dict, dict]:
    """The error frame a bad message gets, then the answer to a good one after it."""
    if "bytes" in bad:
        socket.send_bytes(bad["bytes"])  # type: ignore[arg-type]
    else:
        socket.send_text(bad["text"])  # type: ignore[arg-type]
    error = json.loads(socket.receive_text())
    socket.send_bytes(msgpack.packb({"ok": 1}))
    return error, msgpack.unpackb(socket.receive_bytes())


def test_a_msgpack_binary_value_is_an_error_frame_and_the_socket_lives_on(client: tuple[TestClient, dict[str, str]]) -> None:
    test_client, auth = client
    with test_client.websocket_connect(ECHO, headers=auth) as socket:
        error, answer = answered_after(socket, {"bytes": msgpack.packb({"image": b"\x89PNG"}, use_bin_type=True)})
    assert error["type"] == "x-fal-error" and "binary" in error["reason"]
    assert answer == {"echo": {"ok": 1}}


def test_json_nested_100000_deep_is_an_error_frame_and_the_socket_lives_on(client: tuple[TestClient, dict[str, str]]) -> None:
    test_client, auth = client
    with test_client.websocket_connect(ECHO, headers=auth) as socket:
        error, answer = answered_after(socket, {"text": '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"})
    assert "nested" in error["reason"]
    assert answer == {"echo": {"ok": 1}}


def test_msgpack_nested_100000_deep_is_an_error_frame_and_the_socket_lives_on(client: tuple[TestClient, dict[str, str]]) -> None:
    test_client, auth = client
    with test_client.websocket_connect(ECHO, headers=auth) as socket:
        error, answer = answered_after(socket, {"bytes": b"\x81\xa1a" + b"\x91" * 100_000 + b"\x90"})
    assert error["error"] == "INVALID_MESSAGE"
    assert answer == {"echo": {"ok": 1}}


def test_a_frame_past_the_size_bound_is_refused_undecoded(client: tuple[TestClient, dict[str, str]]) -> None:
    test_client, auth = client
    with test_client.websocket_connect(ECHO, headers=auth) as socket:
        big = msgpack.packb({"prompt": "x" * realtime.MAX_FRAME_BYTES})
        error, answer = answered_after(socket, {"bytes": big})
    assert f"larger than {realtime.MAX_FRAME_BYTES} bytes" in error["reason"]
    assert answer == {"echo": {"ok": 1}}


async def test_waiting_messages_are_bounded_in_bytes_not_only_in_number() -> None:
    from openfal.http.realtime_routes import Inbox

    inbox = Inbox(60)
    third = realtime.MAX_BUFFERED_BYTES // 2
    await inbox.put({"n": 1}, third)
    await inbox.put({"n": 2}, third)
    waiting = asyncio.ensure_future(inbox.put({"n": 3}, third))
    await asyncio.sleep(0.05)
    assert not waiting.done() and inbox.size == 2 * third  # the reader stops here
    assert await inbox.get() == {"n": 1}
    await asyncio.wait_for(waiting, 1)
    assert [await inbox.get(), await inbox.get()] == [{"n": 2}, {"n": 3}]


async def test_one_message_larger_than_the_byte_bound_may_still_wait_alone() -> None:
    from openfal.http.realtime_routes import Inbox

    inbox = Inbox(1)
    await asyncio.wait_for(inbox.put({"n": 1}, realtime.MAX_BUFFERED_BYTES * 2), 1)
    assert await inbox.get() == {"n": 1}
