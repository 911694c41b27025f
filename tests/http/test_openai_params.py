"""OpenAI parameters that could not be honoured are refused, as OpenAI refuses them,
before anything is queued (N9): a NUL in a multipart text field (JSON bodies were
already checked by the JSON parser) and a fractional ``n``, which was rounded down."""

from __future__ import annotations

import io

from PIL import Image

from tests.support import App


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_nul_in_an_edits_form_field_is_a_400_naming_the_field(app: App) -> None:
    headers = {"Authorization": f"Bearer {await app.key()}"}
    files = {"image": ("a.png", _png(), "image/png")}
    response = await app.client.post("/v1/images/edits", headers=headers, files=files, data={"prompt": "a\x00b"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt"
    assert await app.runtime.requests.history(None) == []


async def test_a_fractional_n_is_refused_not_rounded(app: App) -> None:
    headers = {"Authorization": f"Bearer {await app.key()}"}
    response = await app.client.post("/v1/images/generations", headers=headers, json={"prompt": "a fox", "n": 1.5})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "n"
    assert await app.runtime.requests.history(None) == []


async def test_n_as_a_form_field_of_digits_is_an_integer(app: App) -> None:
    headers = {"Authorization": f"Bearer {await app.key()}"}
    files = {"image": ("a.png", _png(), "image/png")}
    response = await app.client.post("/v1/images/edits", headers=headers, files=files, data={"prompt": "x", "n": "0"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "integer_below_min_value"
