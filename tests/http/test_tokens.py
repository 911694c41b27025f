"""``POST /tokens/``: fal's REST call for realtime tokens, in fal's body and answer shapes."""

from __future__ import annotations

import time

from openfal.realtime import RealtimeTokens
from tests.support import App


async def test_a_token_is_a_json_string_scoped_to_the_asked_apps(app: App, auth: dict[str, str]) -> None:
    response = await app.client.post("/tokens/", json={"allowed_apps": ["flux-1"], "token_expiration": 120}, headers=auth)
    assert response.status_code == 200
    token = response.json()
    assert isinstance(token, str)
    claims = RealtimeTokens(app.runtime.uploads.secret).open(token)
    assert claims is not None and claims.apps == ("flux-1",)
    assert claims.allows("fal-ai/flux-1") and not claims.allows("fal-ai/flux-pro")
    assert time.time() + 100 < claims.expires <= time.time() + 120


async def test_without_a_slash_too(app: App, auth: dict[str, str]) -> None:
    assert (await app.client.post("/tokens", json={"allowed_apps": ["x"]}, headers=auth)).status_code == 200


async def test_tokens_need_a_key(app: App) -> None:
    assert (await app.client.post("/tokens/", json={"allowed_apps": ["flux-1"]})).status_code == 401


async def test_a_bad_body_is_a_422_detail_list(app: App, auth: dict[str, str]) -> None:
    for body in [{}, {"allowed_apps": []}, {"allowed_apps": ["a"], "token_expiration": 0}, {"allowed_apps": ["a"], "token_expiration": 86400}]:
        response = await app.client.post("/tokens/", json=body, headers=auth)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"][0] == "body", body


def test_tokens_are_tamper_proof_and_expire() -> None:
    tokens = RealtimeTokens(b"s" * 32)
    token = tokens.issue("k1", ["flux-1"], 60)
    assert tokens.open(token) is not None
    assert RealtimeTokens(b"t" * 32).open(token) is None
    payload, _, mac = token.rpartition(".")
    assert tokens.open(payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + mac) is None
    assert tokens.open(tokens.issue("k1", ["flux-1"], -1)) is None
