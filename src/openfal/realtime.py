"""fal's realtime protocol, free of HTTP: short-lived tokens scoped to apps
(``POST /tokens/``) and the frames of ``/{endpoint}/realtime`` WebSockets.

Tokens are what fal's clients fetch before connecting (``{"allowed_apps": [alias],
"token_expiration": seconds}`` -> a JSON string) and pass as ``?fal_jwt_token=``. Here
they are ``ofrt.<base64url claims>.<hmac-sha256>``, signed with the server's upload
secret (so any API node can check them), naming the key that asked, its app aliases and
an expiry. A token never outlives its key: the key is looked up again on connect.

Frames: the client sends msgpack (binary) or JSON (text) objects, one input each; the
server answers each with one binary msgpack frame holding the endpoint's output, or a
text frame ``{"type": "x-fal-error", "error": ..., "reason": ...}``, which both clients
raise as an error."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgpack
from pydantic import BaseModel, ConfigDict, Field

from openfal.signed_claims import SignedClaims
from openfal.validation import check_json_value, loads_strict

PREFIX = "ofrt."
#: fal's clients ask for 120 s; a token is for opening a connection, not for keeping
MAX_EXPIRATION_SECONDS = 3600
#: ``max_buffering`` as the clients accept it
BUFFERING_RANGE = (1, 60)
DEFAULT_BUFFERING = 1
#: one message: an input with an image inlined as a data URI fits; the server's
#: WebSocket layer refuses larger frames before assembling them (close 1009)
MAX_FRAME_BYTES = 4 * 1024 * 1024
#: the frames waiting on one socket, together: past this the server stops reading
#: (as past ``max_buffering``), so 60 large frames cannot pile up in memory
MAX_BUFFERED_BYTES = 16 * 1024 * 1024


class TokenRequest(BaseModel):
    """``POST /tokens/``'s body, as fal's clients send it."""

    model_config = ConfigDict(extra="ignore")

    allowed_apps: Annotated[list[Annotated[str, Field(min_length=1, max_length=255)]], Field(min_length=1, max_length=32)]
    token_expiration: Annotated[int, Field(ge=1, le=MAX_EXPIRATION_SECONDS)] = 120


@dataclass(frozen=True, slots=True)
class Claims:
    key_id: str | None
    apps: tuple[str, ...]
    expires: float

    def allows(self, app: str) -> bool:
        """Whether the token covers ``app`` (``owner/alias``): fal's clients name the
        alias only, so either spelling is accepted."""
        alias = app.rsplit("/", 1)[-1]
        return alias in self.apps or app in self.apps


class RealtimeTokens:
    def __init__(self, secret: bytes) -> None:
        self.claims = SignedClaims(secret)

    def issue(self, key_id: str | None, apps: list[str], seconds: int) -> str:
        return self.claims.sign(PREFIX, {"kid": key_id, "apps": apps}, seconds)[0]

    def open(self, token: str) -> Claims | None:
        """The claims of a valid, unexpired token, else None."""
        claims = self.claims.open(PREFIX, token)
        apps = claims.get("apps") if claims else None
        if claims is None or not isinstance(apps, list) or not all(isinstance(a, str) for a in apps):
            return None
        return Claims(claims.get("kid"), tuple(apps), float(claims["exp"]))


class FrameError(ValueError):
    """A frame that is not one input object."""


def frame_size(message: Mapping[str, Any]) -> int:
    """The bytes one WebSocket ``receive`` message carries."""
    data = message.get("bytes") if message.get("bytes") is not None else message.get("text")
    return len(data) if data is not None else 0


def decode_frame(message: Mapping[str, Any]) -> dict[str, Any]:
    """The input carried by one WebSocket ``receive`` message (binary msgpack or text
    JSON): at most ``MAX_FRAME_BYTES``, checked before it is decoded, and only what a
    JSON body may hold (``loads_strict``'s rules: nesting, NUL, NaN; msgpack's binary
    and extension values have no JSON form to store)."""
    if frame_size(message) > MAX_FRAME_BYTES:
        raise FrameError(f"the message is larger than {MAX_FRAME_BYTES} bytes")
    try:
        if message.get("bytes") is not None:
            value = msgpack.unpackb(message["bytes"], raw=False)
            check_json_value(value)
        elif message.get("text") is not None:
            value = loads_strict(message["text"])
        else:
            raise FrameError("empty frame")
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise FrameError(f"the message is not one JSON-like msgpack or JSON object: {str(exc) or type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise FrameError("each message must be one input object")
    return value


def encode_result(body: Any) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


def error_frame(error: str, reason: str) -> str:
    return json.dumps({"type": "x-fal-error", "error": error, "reason": reason})


def parse_buffering(value: str | None) -> int:
    """``max_buffering`` from the query; ValueError outside the clients' 1-60."""
    if value is None or value == "":
        return DEFAULT_BUFFERING
    number = int(value)
    low, high = BUFFERING_RANGE
    if not low <= number <= high:
        raise ValueError(f"max_buffering must be between {low} and {high}")
    return number
