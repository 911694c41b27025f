"""The OpenAI Images API (``/v1``), driven by the official ``openai`` Python package,
against the real queue and the local backend with the tiny model set: every call is a
request like any other (keys, scopes, credit, history, webhooks), errors in OpenAI's shape."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # any accidental hub call fails fast

import httpx
import openai
import pytest
from PIL import Image

from openfal import accounting
from openfal.backends.builtin import BuiltinBackend
from openfal.backends.local import LocalBackend
from openfal.store import ledger
from tests.local.helpers import TEST_OPTIONS
from tests.support import App, Receiver, make_settings, running_app

BASE = "http://openfal.test/v1"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from openfal.backends.local.tiny import build_tiny_models

    root = tmp_path_factory.mktemp("models")
    build_tiny_models(root)
    return root


@pytest.fixture
async def app(tmp_path: Path, models_dir: Path) -> AsyncIterator[App]:
    settings = make_settings(tmp_path, models_dir=models_dir, demo=True)
    backends: dict[str, Any] = {"builtin": BuiltinBackend(), "local": LocalBackend(settings, options=TEST_OPTIONS)}
    async with running_app(settings, backends) as app:
        yield app


def sdk(app: App, secret: str) -> openai.AsyncOpenAI:
    """The official SDK, sending ``Authorization: Bearer <openfal key>``; no retries, so
    a test sees the first answer."""
    return openai.AsyncOpenAI(api_key=secret, base_url=BASE, http_client=app.client, max_retries=0)


async def image_at(app: App, url: str) -> Image.Image:
    served = await app.client.get(httpx.URL(url).path)
    assert served.status_code == 200
    return Image.open(io.BytesIO(served.content))


def png(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_generate_returns_urls_of_images_of_the_asked_size(app: App) -> None:
    """model = an endpoint id, size -> image_size, n -> num_images; URLs on openfal's media."""
    client = sdk(app, await app.key())
    response = await client.images.generate(model="fal-ai/flux-1/schnell", prompt="a red fox", size="64x48", n=2)
    assert len(response.data) == 2 and response.created > 0
    for item in response.data:
        assert item.url is not None and item.b64_json is None
        assert (await image_at(app, item.url)).size == (64, 48)
    assert response.data[0].revised_prompt == "a red fox"


async def test_an_alias_and_b64_json(app: App) -> None:
    """OpenAI's model names are aliases (dall-e-3 -> FLUX.1 [dev]); b64_json inlines the image."""
    client = sdk(app, await app.key())
    response = await client.images.generate(model="dall-e-3", prompt="a lighthouse", size="64x64", response_format="b64_json", quality="hd", style="vivid")
    (item,) = response.data
    assert item.url is None
    image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
    assert image.size == (64, 64)
    history = (await app.client.get("/api/requests", headers={"Authorization": f"Key {client.api_key}"})).json()["items"]
    assert history[0]["endpoint_id"] == "fal-ai/flux-1/dev" and history[0]["status"] == "COMPLETED"


async def test_gpt_image_models_answer_b64_json_by_default(app: App) -> None:
    client = sdk(app, await app.key())
    response = await client.images.generate(model="gpt-image-1", prompt="a cat", size="64x64", output_format="png")
    assert Image.open(io.BytesIO(base64.b64decode(response.data[0].b64_json))).format == "PNG"


async def test_a_generation_is_billed_and_in_the_history_like_any_request(app: App) -> None:
    """The key's credit is charged at the endpoint's price; the request is in /api/requests."""
    key, secret = await app.runtime.keys.create("customer")
    async with app.runtime.db.write() as conn:
        await accounting.credit(conn, key.id, accounting.MICROS)
    await sdk(app, secret).images.generate(model="fal-ai/flux-1/schnell", prompt="a boat", size="64x64")
    items = (await app.client.get("/api/requests", headers={"Authorization": f"Bearer {secret}"})).json()["items"]
    assert [i["endpoint_id"] for i in items] == ["fal-ai/flux-1/schnell"]
    assert await ledger.balance(app.runtime.db, key.id) < accounting.MICROS
    assert await ledger.ledger_sum(app.runtime.db, key.id) == await ledger.balance(app.runtime.db, key.id)


async def test_fal_webhook_works_on_the_openai_routes(app: App) -> None:
    """?fal_webhook= (extra_query in the SDK) gets fal's webhook payload when it completes."""
    receiver = Receiver()
    try:
        client = sdk(app, await app.key())
        await client.images.generate(model="fal-ai/flux-1/schnell", prompt="a tree", size="64x64", extra_query={"fal_webhook": receiver.url})
        for _ in range(200):
            if receiver.received:
                break
            await asyncio.sleep(0.05)
        payload = json.loads(receiver.received[0][1])
        assert payload["status"] == "OK" and payload["payload"]["images"][0]["width"] == 64
    finally:
        receiver.close()


async def test_edit_one_image_with_kontext(app: App) -> None:
    """A multipart image + prompt onto Kontext (the default for OpenAI's model names)."""
    client = sdk(app, await app.key())
    response = await client.images.edit(model="dall-e-2", image=("in.png", png(), "image/png"), prompt="make it blue")
    (item,) = response.data
    assert (await image_at(app, item.url)).format == "JPEG"
    history = (await app.client.get("/api/requests", headers={"Authorization": f"Key {client.api_key}"})).json()["items"]
    assert history[0]["endpoint_id"] == "fal-ai/flux-pro/kontext"


async def test_edit_several_images_goes_to_the_multi_endpoint(app: App) -> None:
    client = sdk(app, await app.key())
    response = await client.images.edit(
        model="fal-ai/flux-pro/kontext", image=[("a.png", png(), "image/png"), ("b.png", png(48, 48), "image/png")], prompt="combine them"
    )
    assert len(response.data) == 1
    history = (await app.client.get("/api/requests", headers={"Authorization": f"Key {client.api_key}"})).json()["items"]
    assert history[0]["endpoint_id"] == "fal-ai/flux-pro/kontext/multi"


async def test_a_flux2_model_edits_on_its_edit_endpoint_with_several_images(app: App) -> None:
    """``model`` = a FLUX.2 text-to-image endpoint: /v1/images/edits goes to its ``/edit``
    twin with every image in ``image_urls``; the output has the first image's size."""
    client = sdk(app, await app.key())
    response = await client.images.edit(
        model="fal-ai/flux-2/klein/4b", image=[("a.png", png(96, 64), "image/png"), ("b.png", png(), "image/png")],
        prompt="combine them", extra_body={"output_format": "webp"},
    )  # fmt: skip
    (item,) = response.data
    image = await image_at(app, item.url)
    assert image.format == "WEBP" and image.size == (96, 64)
    history = (await app.client.get("/api/requests", headers={"Authorization": f"Key {client.api_key}"})).json()["items"]
    assert history[0]["endpoint_id"] == "fal-ai/flux-2/klein/4b/edit"


async def test_a_flux2_generation_takes_any_flux2_model(app: App) -> None:
    client = sdk(app, await app.key())
    response = await client.images.generate(model="fal-ai/flux-2/klein/9b", prompt="a cat", size="512x512")
    (item,) = response.data
    assert (await image_at(app, item.url)).size == (512, 512)


async def test_edit_onto_image_to_image(app: App) -> None:
    client = sdk(app, await app.key())
    response = await client.images.edit(model="fal-ai/flux-1/dev/image-to-image", image=("in.png", png(), "image/png"), prompt="a painting", response_format="b64_json")
    assert Image.open(io.BytesIO(base64.b64decode(response.data[0].b64_json))).size[0] > 0


async def test_masks_are_refused_clearly(app: App) -> None:
    client = sdk(app, await app.key())
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.edit(image=("in.png", png(), "image/png"), mask=("m.png", png(), "image/png"), prompt="x")
    assert caught.value.body["param"] == "mask"


async def test_errors_are_in_openais_shape(app: App) -> None:
    """Bad input is 400 with the OpenAI parameter named; unknown models 404."""
    client = sdk(app, await app.key())
    with pytest.raises(openai.BadRequestError) as too_many:
        await client.images.generate(model="fal-ai/flux-1/schnell", prompt="x", n=9, size="64x64")
    assert too_many.value.body["param"] == "n" and too_many.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as bad_size:
        await client.images.generate(model="fal-ai/flux-1/schnell", prompt="x", size="big")  # type: ignore[arg-type]
    assert bad_size.value.body["param"] == "size"
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.images.generate(model="nobody/nothing", prompt="x")
    assert unknown.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as editor:
        await client.images.generate(model="fal-ai/flux-pro/kontext", prompt="x")
    assert editor.value.body["param"] == "model"
    raw = await app.client.post("/v1/images/generations", json={"model": "dall-e-2"}, headers={"Authorization": f"Bearer {client.api_key}"})
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "prompt"


async def test_auth_scope_and_credit_errors_are_in_openais_shape(app: App) -> None:
    with pytest.raises(openai.AuthenticationError) as bad_key:
        await sdk(app, "nobody:nothing").images.generate(model="dall-e-2", prompt="x")
    assert bad_key.value.body["code"] == "invalid_api_key"
    key, secret = await app.runtime.keys.create("scoped")
    await app.runtime.keys.set_limits(key.id, endpoints=["openfal/utils/*"])
    with pytest.raises(openai.PermissionDeniedError):
        await sdk(app, secret).images.generate(model="dall-e-2", prompt="x", size="64x64")
    broke, broke_secret = await app.runtime.keys.create("broke", credit_micros=0)
    with pytest.raises(openai.PermissionDeniedError) as no_credit:
        await sdk(app, broke_secret).images.generate(model="dall-e-2", prompt="x", size="64x64")
    assert "balance" in no_credit.value.message.lower()
    assert await app.runtime.requests.history(broke.id) == []


async def test_models_lists_aliases_and_image_endpoints(app: App) -> None:
    client = sdk(app, await app.key())
    ids = [m.id async for m in client.models.list()]
    assert {"dall-e-2", "dall-e-3", "gpt-image-1", "fal-ai/flux-1/schnell", "fal-ai/flux-pro/kontext"} <= set(ids)
    assert "openfal/utils/echo" not in ids
    assert (await client.models.retrieve("dall-e-3")).owned_by == "openfal"


async def test_an_edit_image_over_the_upload_limit_is_refused(tmp_path: Path) -> None:
    """Past OPENFAL_MAX_UPLOAD_BYTES an image is a 413 in OpenAI's shape, nothing queued."""
    async with running_app(make_settings(tmp_path, max_upload_bytes=4096)) as small:
        client = sdk(small, await small.key())
        with pytest.raises(openai.APIStatusError) as caught:
            await client.images.edit(image=("big.png", png(512, 512) + b"\0" * 8192, "image/png"), prompt="x")
        assert caught.value.status_code == 413 and "larger than 4096" in caught.value.message
        assert await small.runtime.requests.history(None) == []


async def test_stream_sends_previews_as_partial_images_then_the_completed_image(app: App) -> None:
    """stream=True: OpenAI's SSE, up to partial_images previews (JPEG), then the image."""
    client = sdk(app, await app.key())
    stream = await client.images.generate(model="fal-ai/flux-1/dev", prompt="a fox", size="64x64", stream=True, partial_images=2)
    events = [event async for event in stream]
    assert events[-1].type == "image_generation.completed"
    assert Image.open(io.BytesIO(base64.b64decode(events[-1].b64_json))).size == (64, 64)
    partial = [e for e in events if e.type == "image_generation.partial_image"]
    assert 1 <= len(partial) <= 2 and [e.partial_image_index for e in partial] == list(range(len(partial)))
    assert base64.b64decode(partial[0].b64_json)[:2] == b"\xff\xd8"


async def test_streamed_edits_use_image_edit_events(app: App) -> None:
    client = sdk(app, await app.key())
    stream = await client.images.edit(model="fal-ai/flux-1/dev/image-to-image", image=("in.png", png(), "image/png"), prompt="a painting", stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events] == ["image_edit.completed"]


async def test_a_stream_whose_input_is_refused_is_an_ordinary_error(app: App) -> None:
    client = sdk(app, await app.key())
    with pytest.raises(openai.BadRequestError):
        await client.images.generate(model="fal-ai/flux-1/schnell", prompt="x", n=9, stream=True)


async def test_qwen_image_generates_and_its_edits_go_to_qwen_image_edit(app: App) -> None:
    """One model name for both calls: ``qwen-image`` generates on fal-ai/qwen-image and
    edits on fal-ai/qwen-image-edit-2511 (whose schema takes at most three images: a
    fourth is refused on ``image`` before anything runs)."""
    client = sdk(app, await app.key())
    generated = await client.images.generate(model="qwen-image", prompt="a sign", size="32x32")
    assert (await image_at(app, generated.data[0].url)).size == (32, 32)
    history = (await app.client.get("/api/requests", headers={"Authorization": f"Key {client.api_key}"})).json()["items"]
    assert history[0]["endpoint_id"] == "fal-ai/qwen-image"
    with pytest.raises(openai.BadRequestError) as refused:
        await client.images.edit(model="qwen-image", image=[("a.png", png(32, 32), "image/png")] * 4, prompt="combine them")
    assert refused.value.body["param"] == "image" and "3" in refused.value.body["message"]


async def test_z_image_turbo_edits_go_to_its_image_to_image_endpoint_with_webp(app: App) -> None:
    client = sdk(app, await app.key())
    response = await client.images.edit(model="z-image-turbo", image=("in.png", png(48, 32), "image/png"), prompt="a painting", output_format="webp")
    image = await image_at(app, response.data[0].url)
    assert image.size == (48, 32) and image.format == "WEBP"
    history = (await app.client.get("/api/requests", headers={"Authorization": f"Key {client.api_key}"})).json()["items"]
    assert history[0]["endpoint_id"] == "fal-ai/z-image/turbo/image-to-image"
