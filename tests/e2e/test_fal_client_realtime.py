"""fal-client 1.0.3's ``realtime`` (token from ``POST /tokens/``, then a msgpack
WebSocket) against a real ``openfal serve --demo`` process; the client's module
constants point its REST and WebSocket URLs at openfal (over TLS, ``FAL_RUN_HOST`` alone
sets the WebSocket host: ``wss://{FAL_RUN_HOST}/``)."""

from __future__ import annotations

from collections.abc import Iterator

import fal_client
import fal_client.client as fal_module
import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.e2e.conftest import Server

TINY = {"prompt": "a lighthouse", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 2, "seed": 9}


#: the README's two forms of the client's realtime URL: openfal's root, and its run host
#: ``host/run`` (``REALTIME_URL_FORMAT = "ws://host/run/"``, or ``FAL_RUN_HOST=host/run`` over TLS)
URL_FORMS = pytest.mark.parametrize("prefix", ["", "/run"], ids=["at-the-root", "under-run"])


@pytest.fixture(params=["", "/run"], ids=["at-the-root", "under-run"])
def client(request: pytest.FixtureRequest, server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[fal_client.SyncClient]:
    monkeypatch.setattr(fal_module, "REST_URL", server.url)
    monkeypatch.setattr(fal_module, "REALTIME_URL_FORMAT", server.url.replace("http://", "ws://") + request.param + "/")
    yield fal_client.SyncClient(key=server.key)


def test_realtime_flux_schnell_answers_each_message(client: fal_client.SyncClient, server: Server) -> None:
    """One result per message, in order, in the endpoint's output shape."""
    with client.realtime("fal-ai/flux-1/schnell") as connection:
        connection.send(TINY)
        connection.send({**TINY, "seed": 10})
        first, second = connection.recv(), connection.recv()
    assert (first["seed"], second["seed"]) == (9, 10)
    image = first["images"][0]
    assert image["width"] == 64 and image["url"].startswith(server.url + "/files/")
    assert httpx.get(image["url"], timeout=10).content[:2] == b"\xff\xd8"


def test_realtime_keeps_order_with_buffering(client: fal_client.SyncClient) -> None:
    with client.realtime("openfal/utils/echo", max_buffering=5) as connection:
        for i in range(8):
            connection.send({"i": i})
        assert [connection.recv() for _ in range(8)] == [{"echo": {"i": i}} for i in range(8)]


def test_realtime_input_errors_raise_and_the_connection_lives_on(client: fal_client.SyncClient) -> None:
    with client.realtime("openfal/utils/sleep") as connection:
        connection.send({"steps": 0})
        with pytest.raises(fal_client.client.RealtimeError) as caught:
            connection.recv()
        assert caught.value.error == "VALIDATION_ERROR" and "steps" in caught.value.reason
        connection.send({"seconds": 0, "steps": 1})
        assert connection.recv() == {"slept": 0.0, "steps": 1}


def test_realtime_with_the_key_on_the_handshake(client: fal_client.SyncClient) -> None:
    """use_jwt=False sends Authorization: Key on the handshake instead of a token."""
    with client.realtime("openfal/utils/echo", use_jwt=False) as connection:
        connection.send({"k": 1})
        assert connection.recv() == {"echo": {"k": 1}}


@URL_FORMS
def test_a_token_for_another_app_is_refused(prefix: str, server: Server) -> None:
    token = httpx.post(f"{server.url}/tokens/", json={"allowed_apps": ["flux-1"]}, headers={"Authorization": f"Key {server.key}"}).json()
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as caught:
        connect(f"{server.url.replace('http', 'ws')}{prefix}/openfal/utils/echo/realtime?fal_jwt_token={token}")
    assert caught.value.response.status_code == 403
    with connect(f"{server.url.replace('http', 'ws')}{prefix}/fal-ai/flux-1/schnell/realtime?fal_jwt_token={token}"):
        pass


def test_realtime_needs_a_token_or_a_key(server: Server) -> None:
    from websockets.sync.client import connect

    for query in ["", "?fal_jwt_token=ofrt.forged.0000"]:
        with pytest.raises(InvalidStatus):
            connect(f"{server.url.replace('http', 'ws')}/openfal/utils/echo/realtime{query}")


@URL_FORMS
async def test_the_async_client_realtime(prefix: str, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fal_module, "REST_URL", server.url)
    monkeypatch.setattr(fal_module, "REALTIME_URL_FORMAT", server.url.replace("http://", "ws://") + prefix + "/")
    client = fal_client.AsyncClient(key=server.key)
    async with client.realtime("openfal/utils/echo") as connection:
        await connection.send({"a": 1})
        assert await connection.recv() == {"echo": {"a": 1}}
