"""Over a real uvicorn listener, hostile request lines still get an answer (issue 8, F7):
a control character in a request id used to be copied into ``x-fal-request-id``, which
h11 refuses to send, so the connection was dropped without a response."""

from __future__ import annotations

import socket

import pytest

from tests.e2e.conftest import Server


def raw_get(server: Server, target: str) -> bytes:
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Key {server.key}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("request_id", ["%00", "a%0db", "a%0ab", "%7f", "%e2%80%ae"])
def test_a_control_character_in_a_request_id_gets_a_404_answer(server: Server, request_id: str) -> None:
    answer = raw_get(server, f"/openfal/utils/requests/{request_id}/status")
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 404"), answer[:300]
    headers = rest.split(b"\r\n\r\n", 1)[0].lower()
    assert b"x-fal-request-id: " in headers
