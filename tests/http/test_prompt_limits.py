"""A prompt past its endpoint's limit is a 422 at submit and nothing is queued (N4: a
2 MiB prompt was accepted and cost 18.6 s of tokenizing that no cancel could stop)."""

from __future__ import annotations

import pytest

from openfal.endpoints import limits
from openfal.endpoints.catalog import CATALOG, validate_input
from openfal.errors import InputInvalid
from tests.support import App


async def test_a_prompt_past_the_default_limit_is_a_422_naming_field_and_limit(app: App, auth: dict[str, str]) -> None:
    prompt = "a" * (limits.DEFAULT_MAX_PROMPT_CHARS + 1)
    response = await app.client.post("/openfal/utils/echo", json={"prompt": prompt}, headers=auth)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "prompt"] and error["type"] == "string_too_long"
    assert error["ctx"] == {"max_length": limits.DEFAULT_MAX_PROMPT_CHARS}
    assert await app.runtime.requests.history(None) == []


async def test_a_prompt_at_the_limit_is_accepted(app: App, auth: dict[str, str]) -> None:
    response = await app.client.post("/openfal/utils/echo", json={"prompt": "a" * limits.DEFAULT_MAX_PROMPT_CHARS}, headers=auth)
    assert response.status_code == 200


async def test_a_negative_prompt_is_bounded_too(app: App, auth: dict[str, str]) -> None:
    response = await app.client.post("/openfal/utils/echo", json={"negative_prompt": "n" * 20_000}, headers=auth)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "negative_prompt"]


def test_an_endpoints_own_limit_wins_over_the_default_most_specific_pattern_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "LIMITS", {"fal-ai/flux-1/*": 300, "fal-ai/flux-1/schnell": 200})
    assert limits.max_prompt_chars("fal-ai/flux-1/dev") == 300
    assert limits.max_prompt_chars("fal-ai/flux-1/schnell") == 200
    assert limits.max_prompt_chars("fal-ai/flux-pro/kontext") == limits.DEFAULT_MAX_PROMPT_CHARS
    with pytest.raises(InputInvalid) as refused:
        validate_input(CATALOG["fal-ai/flux-1/schnell"], {"prompt": "x" * 201})
    assert refused.value.detail[0]["ctx"] == {"max_length": 200}
