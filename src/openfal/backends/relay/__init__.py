"""The relay backend: openfal in front of an upstream fal-compatible queue (fal.ai,
or another openfal). See ``backend.py`` for the flow, ``config.py`` for settings."""

from __future__ import annotations

from openfal.backends.relay.backend import RelayBackend
from openfal.backends.relay.config import UpstreamConfig, check_routes, parse_upstreams
from openfal.config import Settings
from openfal.media import MediaStore

__all__ = ["RelayBackend", "UpstreamConfig", "make_relay_backends"]


def make_relay_backends(
    settings: Settings, existing: set[str] | frozenset[str] = frozenset(), *, media: MediaStore | None = None
) -> dict[str, RelayBackend]:
    """One backend per configured upstream, named like it, each using ``media`` (the
    runtime's store); routes are checked too."""
    backends = {}
    for config in parse_upstreams(settings.upstreams):
        if config.name in existing:
            from openfal.errors import ConfigError

            raise ConfigError(f"upstreams.{config.name}: the name is taken by a built-in backend")
        backends[config.name] = RelayBackend(config, settings, media=media)
    check_routes(settings.routes, set(existing) | set(backends))
    return backends
