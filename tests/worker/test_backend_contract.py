"""Every backend has every member of the contract the worker and the runtime read
(``backends/base.Backend``): nothing is probed with getattr."""

from __future__ import annotations

from pathlib import Path

from openfal.backends.base import Backend
from openfal.backends.builtin import BuiltinBackend
from openfal.backends.local import LocalBackend
from openfal.backends.relay import make_relay_backends
from tests.support import make_settings


def test_builtin_relay_and_local_backends_fulfil_the_whole_contract(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, upstreams={"up": {"base_url": "http://127.0.0.1:9", "keys": ["k:s"]}}, routes={"acme/*": "up"})
    backends = [BuiltinBackend(), LocalBackend(settings), *make_relay_backends(settings, existing={"builtin"}).values()]
    assert len(backends) == 3
    members = [name for name in dir(Backend) if not name.startswith("_")] + list(Backend.__annotations__)
    for backend in backends:
        assert isinstance(backend, Backend)
        assert [m for m in members if not hasattr(backend, m)] == [], type(backend).__name__
