"""The SSRF guard: which addresses openfal dials on a user's behalf (``netguard``) and the
guarded transport that applies it to every address it resolves, hop by hop (``fetch``).

The transport tests dial a real HTTP server on 127.0.0.1 that records what it was asked
for, so a refusal is shown to be the guard's (the same URL reaches the server when
private URLs are allowed) and no request reached it. DNS answers that mix public and
private addresses cannot be had offline from a real resolver, so those tests replace
the event loop's ``getaddrinfo`` (what the guard resolves with) for one invented name."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from openfal.config import Settings
from openfal.errors import InputFetchFailed
from openfal.fetch import GuardedTransport, fetch_bytes
from openfal.netguard import is_public_address

NOT_PUBLIC = [
    "127.0.0.1",
    "127.8.9.10",
    "0.0.0.0",  # dials this machine on Linux
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",  # carrier-grade NAT (RFC 6598), often the cluster network
    "100.127.255.254",
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "192.0.0.1",
    "::",
    "::1",
    "::ffff:127.0.0.1",  # IPv4-mapped IPv6: dials 127.0.0.1 on a dual-stack socket
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:0.0.0.0",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",  # site-local (deprecated, still routed as private by some stacks)
    "ff02::1",
    "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
    "2002:a00:1::1",  # 6to4 wrapping 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "::ffff:8.8.8.8", "2606:4700:4700::1111", "2002:808:808::1"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_private_special_and_wrapped_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_public(address: str) -> None:
    assert is_public_address(address)


# -- the guarded transport, against a real server ---------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """``/ok`` answers 200; ``/to?URL`` redirects there (302); every path is recorded."""

    seen: list[str] = []

    def log_message(self, *args: Any) -> None:
        return None

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(self.path)
        if self.path.startswith("/to?"):
            self.send_response(302)
            self.send_header("Location", self.path.split("?", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def port() -> Iterator[int]:
    """A real server on 127.0.0.1 (IPv4 only); ``_Recorder.seen`` lists what it served."""
    _Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


def guarded(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, allow_private_urls=False, fetch_timeout_seconds=5)


def unguarded(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, allow_private_urls=True, fetch_timeout_seconds=5)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "[::ffff:127.0.0.1]", "localhost"])
async def test_names_and_literals_that_reach_this_machine_are_refused(host: str, port: int, tmp_path: Path) -> None:
    url = f"http://{host}:{port}/ok"
    assert await fetch_bytes(url, unguarded(tmp_path), field="image_url") == b"ok", "the URL does reach the server"
    _Recorder.seen.clear()

    with pytest.raises(InputFetchFailed, match="non-public address"):
        await fetch_bytes(url, guarded(tmp_path), field="image_url")
    assert _Recorder.seen == []


@pytest.mark.parametrize("url", ["http://100.64.0.1/x", "http://[fe80::1]/x", "http://169.254.0.1/x", "http://[fd00::1]/x"])
async def test_shared_and_link_local_networks_are_refused_before_dialling(url: str, tmp_path: Path) -> None:
    with pytest.raises(InputFetchFailed, match="non-public address"):
        await fetch_bytes(url, guarded(tmp_path), field="image_url")


@pytest.fixture
async def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Invented names -> the addresses the loop's resolver answers for them; other names
    resolve for real."""
    answers: dict[str, list[str]] = {}
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host not in answers:
            return await real(host, port, *args, **kwargs)
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port))) for a in answers[host]]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return answers


async def test_a_name_resolving_to_public_and_private_addresses_is_refused(
    resolver: dict[str, list[str]], port: int, tmp_path: Path
) -> None:
    """Dialling the addresses in order would try the public one, fail (offline) and then
    reach 127.0.0.1: any non-public address in the answer refuses the whole name."""
    resolver["mixed.example"] = ["93.184.216.34", "127.0.0.1"]
    with pytest.raises(InputFetchFailed, match=r"'mixed.example'.*non-public address \(127.0.0.1\)"):
        await fetch_bytes(f"http://mixed.example:{port}/ok", guarded(tmp_path), field="image_url")
    assert _Recorder.seen == []


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/secret",
        "http://[::ffff:127.0.0.1]:{port}/secret",
        "http://0.0.0.0:{port}/secret",
        "http://private.example:{port}/secret",
    ],
)
async def test_every_redirect_hop_is_checked(target: str, resolver: dict[str, list[str]], port: int, tmp_path: Path) -> None:
    """The first hop goes to ``start.example`` (resolving to the loopback server), which
    a test policy admits as if it were public; the redirect's target is judged by the
    real rule and refused, and never requested."""
    resolver["start.example"] = ["127.0.0.1"]
    resolver["private.example"] = ["10.0.0.7", "127.0.0.1"]

    def policy(host: str, address: str) -> bool:
        return host == "start.example" or is_public_address(address)

    async with httpx.AsyncClient(transport=GuardedTransport(policy=policy)) as client:
        assert await fetch_bytes(f"http://start.example:{port}/ok", unguarded(tmp_path), field="f", client=client) == b"ok"
        with pytest.raises(InputFetchFailed, match="non-public address"):
            url = f"http://start.example:{port}/to?{target.format(port=port)}"
            await fetch_bytes(url, unguarded(tmp_path), field="image_url", client=client)
    assert "/secret" not in _Recorder.seen
    assert any(path.startswith("/to?") for path in _Recorder.seen)
