"""Fixtures for the local backend: the tiny model set (built once per session, no
network), settings pointing at it, and a backend with CPU-sized options."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # any accidental hub call fails fast
# inductor's CPU vector ISA is taken from /proc/cpuinfo instead of being probed: the probe
# builds and dlopens a test program per ISA (about 7 s of g++ in every xdist worker that
# compiles, its cache being each engine's fresh compile-cache folder). The ISA picked is the
# same; the tests check graphs, recompiles and pixels, not the probe. Before torch is imported
# (torch._inductor.config reads it then); the production server keeps the probe.
os.environ.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "1")

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from openfal.backends.local import LocalBackend
from openfal.config import Settings
from tests.local.helpers import TEST_OPTIONS


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub reads HF_HUB_OFFLINE at import; another test module may have
    imported it first."""
    try:
        import huggingface_hub.constants
    except ImportError:
        return
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the tiny set, built once for the session."""
    from openfal.backends.local.tiny import build_tiny_models

    root = tmp_path_factory.mktemp("models")
    build_tiny_models(root)
    return root


@pytest.fixture
def make_settings(tmp_path: Path, models_dir: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path, "models_dir": models_dir, "demo": True, "allow_private_urls": True}
        return Settings(**{**values, **overrides})

    return make


@pytest.fixture
async def backend(make_settings: Callable[..., Settings]) -> AsyncIterator[LocalBackend]:
    """The local backend in demo mode (the tiny set), CPU-sized options."""
    local = LocalBackend(make_settings(), options=TEST_OPTIONS)
    await local.start()
    yield local
    await local.close()
