"""HTTP calls to an upstream fal-compatible queue, and nothing else: submit, status,
result, cancel. Replies come back parsed (JSON or not) and never raise for a status
code; network failures raise ``UpstreamUnreachable``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from openfal import __version__
from openfal.backends.relay.config import UpstreamConfig, origin_of
from openfal.endpoints.ids import app_of
from openfal.validation import loads_strict

USER_AGENT = f"openfal-relay/{__version__}"


class UpstreamUnreachable(Exception):
    """The call did not get an HTTP answer (refused, reset, timed out)."""

    def __init__(self, message: str, *, connect: bool) -> None:
        super().__init__(message)
        #: True when the request certainly never reached the upstream
        self.connect = connect


@dataclass(frozen=True, slots=True)
class Reply:
    status_code: int
    headers: httpx.Headers
    text: str
    #: the decoded JSON body, or None when the body is not JSON
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    def snippet(self, limit: int = 200) -> str:
        text = " ".join(self.text.split())
        return text[:limit] + ("..." if len(text) > limit else "")


@dataclass(frozen=True, slots=True)
class Handle:
    """A request the upstream accepted, and the key that must follow it."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    key_id: str

    def state(self) -> dict[str, Any]:
        return {
            "upstream_request_id": self.request_id,
            "status_url": self.status_url,
            "response_url": self.response_url,
            "cancel_url": self.cancel_url,
            "key_id": self.key_id,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Handle | None:
        try:
            return cls(
                request_id=str(state["upstream_request_id"]),
                status_url=str(state["status_url"]),
                response_url=str(state["response_url"]),
                cancel_url=str(state["cancel_url"]),
                key_id=str(state["key_id"]),
            )
        except KeyError:
            return None


class UpstreamClient:
    def __init__(self, config: UpstreamConfig, http: httpx.AsyncClient) -> None:
        self.config = config
        self.http = http

    def _headers(self, secret: str) -> dict[str, str]:
        return {"Authorization": f"Key {secret}", "Accept": "application/json", "User-Agent": USER_AGENT}

    async def _call(self, method: str, url: str, secret: str, **kwargs: Any) -> Reply:
        try:
            response = await self.http.request(
                method, url, headers={**self._headers(secret), **kwargs.pop("headers", {})}, timeout=self.config.http_timeout, **kwargs
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise UpstreamUnreachable(f"cannot connect ({type(exc).__name__})", connect=True) from None
        except httpx.TimeoutException as exc:
            raise UpstreamUnreachable(f"no answer within {self.config.http_timeout:g} s ({type(exc).__name__})", connect=False) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnreachable(f"{type(exc).__name__}: {exc}", connect=False) from None
        text = response.text
        try:
            body = loads_strict(text) if text.strip() else None
        except ValueError:
            body = None
        return Reply(response.status_code, response.headers, text, body)

    async def submit(
        self,
        endpoint_id: str,
        input: dict[str, Any],
        secret: str,
        *,
        webhook_url: str | None = None,
        priority: str = "normal",
        no_retry: bool = False,
        idempotency_key: str | None = None,
    ) -> Reply:
        url = f"{self.config.base_url}/{endpoint_id.strip('/')}"
        params = {"fal_webhook": webhook_url} if webhook_url else None
        body = json.dumps(input).encode()
        headers = {"Content-Type": "application/json", "X-Fal-Queue-Priority": priority}
        if no_retry:
            headers["X-Fal-No-Retry"] = "1"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return await self._call("POST", url, secret, content=body, params=params, headers=headers)

    async def status(self, handle: Handle, secret: str) -> Reply:
        return await self._call("GET", handle.status_url, secret, params={"logs": "1"})

    async def result(self, handle: Handle, secret: str) -> Reply:
        return await self._call("GET", handle.response_url, secret)

    async def cancel(self, handle: Handle, secret: str) -> Reply:
        return await self._call("PUT", handle.cancel_url, secret)

    def handle_from(self, endpoint_id: str, body: dict[str, Any], key_id: str) -> Handle | None:
        """The accepted request a submit reply describes, or None if it names none.

        The upstream's own URLs are used when they are on the configured origin (fal's
        Python client does the same); otherwise they are built the documented way."""
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not request_id.strip():
            return None
        base = f"{self.config.base_url}/{app_of(endpoint_id)}/requests/{quote(request_id, safe='')}"
        built = {"status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"}
        urls = {name: self._same_origin(body.get(name)) or default for name, default in built.items()}
        return Handle(request_id, urls["status_url"], urls["response_url"], urls["cancel_url"], key_id)

    def _same_origin(self, url: Any) -> str | None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return None
        if origin_of(url) != self.config.origin or urlsplit(url).query:
            return None
        return url
