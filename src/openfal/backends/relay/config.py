"""Upstream configuration: ``settings.upstreams`` parsed and checked once, at start.

    upstreams = {"fal": {"base_url": "https://queue.fal.run", "keys": ["id:secret", ...]}}
    routes    = {"fal-ai/*": "fal"}

Every upstream becomes one relay backend named like the upstream. Mistakes are
``ConfigError``s that name the upstream and the field, never a crash mid-request.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from openfal.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: backend names the relay may not take
RESERVED = frozenset({"local", "builtin"})


class UpstreamConfig(BaseModel):
    """One upstream fal-compatible queue and the keys openfal uses on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    #: the queue host: ``https://queue.fal.run`` for fal, or another openfal's URL
    base_url: str
    #: ``key_id:key_secret`` strings; several give failover when one is rate limited
    keys: tuple[str, ...] = Field(min_length=1)
    #: first status poll delay; grows by ``poll_backoff`` while nothing changes
    poll_interval: float = Field(0.2, gt=0, le=60)
    poll_max_interval: float = Field(3.0, gt=0, le=300)
    poll_backoff: float = Field(1.5, ge=1, le=10)
    #: the longest an upstream request may take once submitted (then it is cancelled)
    timeout: float = Field(3600.0, gt=0)
    #: per HTTP call to the upstream
    http_timeout: float = Field(30.0, gt=0, le=600)
    #: requests relayed at once by one worker process
    concurrency: int = Field(32, ge=1, le=1024)
    #: submit tries per attempt, across keys (the queue then retries the attempt)
    submit_attempts: int = Field(4, ge=1, le=100)
    #: longest wait for a cooling key before giving the attempt back to the queue
    submit_wait_max: float = Field(10.0, ge=0)
    #: first cool-down of a key that got 429/5xx; doubles per failure up to the max
    cooldown: float = Field(2.0, ge=0)
    cooldown_max: float = Field(300.0, ge=0)
    #: cool-down of a key the upstream refused (401/403)
    auth_cooldown: float = Field(600.0, ge=0)
    #: consecutive failed status/result calls before the attempt is given back
    max_poll_failures: int = Field(8, ge=1, le=1000)
    #: time limit of one result media download (default: settings.fetch_timeout_seconds)
    media_timeout: float | None = Field(None, gt=0)
    #: ask the upstream to POST a webhook to openfal (needs settings.public_base_url);
    #: it only wakes the poller early, polling stays the source of truth
    webhook: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-64 letters, digits, '_', '-' or '.'")
        if value in RESERVED:
            raise ValueError(f"{value!r} is a built-in backend name")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL such as https://queue.fal.run")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value.strip().rstrip("/")

    @field_validator("keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError("must be a list of 'key_id:key_secret' strings")
        for key in value:
            if not isinstance(key, str) or not key.strip():
                raise ValueError("every key must be a non-empty string")
            if any(c.isspace() or ord(c) < 32 for c in key.strip()):
                raise ValueError("a key must not contain spaces or control characters")
        return tuple(k.strip() for k in value)

    @property
    def origin(self) -> tuple[str, str, int]:
        return origin_of(self.base_url)


def origin_of(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def key_id(key: str) -> str:
    """A stable, non-secret name for a key: its id part, or a hash of the whole key."""
    if ":" in key:
        return key.split(":", 1)[0]
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def parse_upstreams(upstreams: Mapping[str, Any]) -> list[UpstreamConfig]:
    configs = []
    for name, raw in upstreams.items():
        if not isinstance(raw, Mapping):
            raise ConfigError(f"upstreams.{name}: expected an object with base_url and keys")
        try:
            config = UpstreamConfig.model_validate({**raw, "name": name})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'value'}: {error['msg']}" for error in exc.errors(include_url=False)
            )
            raise ConfigError(f"upstreams.{name}: {problems}") from None
        ids = [key_id(k) for k in config.keys]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"upstreams.{name}.keys: the same key id appears twice")
        configs.append(config)
    return configs


def check_routes(routes: Mapping[str, str], backends: Iterable[str]) -> None:
    """Every route must name a backend this deployment has (or could have: ``local``)."""
    known = set(backends) | RESERVED
    for pattern, target in routes.items():
        if target not in known:
            raise ConfigError(
                f"routes[{pattern!r}] points at {target!r}, which is neither a backend "
                f"({', '.join(sorted(RESERVED))}) nor a configured upstream ({', '.join(sorted(set(backends) - RESERVED)) or 'none'})"
            )
