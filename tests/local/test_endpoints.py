"""Every endpoint the local backend serves runs on the tiny set and returns fal's result
shape with images of the size it reports."""

from __future__ import annotations

from typing import Any

import pytest

from openfal.backends.local import LocalBackend
from openfal.endpoints.catalog import CATALOG
from openfal.models import MediaBlob
from tests.local.helpers import data_uri, output_of, pixels, run_one

IMAGE = data_uri(80, 64)  # aspect 1.25

# (endpoint, input, expected (width, height)). Kontext sizes follow TEST_OPTIONS'
# kontext_area of 128x128: the preferred Kontext resolution nearest the aspect ratio,
# scaled by 1/8 (1104x944 -> 128x112 for 1.25; 1024x1024 -> 128x128), or the
# aspect_ratio at that area.
CASES: list[tuple[str, dict[str, Any], tuple[int, int]]] = [
    ("fal-ai/flux-1/dev", {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 2}, (64, 48)),
    ("fal-ai/flux-1/schnell", {"prompt": "a fox", "image_size": {"width": 96, "height": 64}, "num_inference_steps": 2}, (96, 64)),
    ("fal-ai/flux-1/dev/image-to-image", {"prompt": "a fox", "image_url": IMAGE, "num_inference_steps": 10, "strength": 0.3}, (80, 64)),
    ("fal-ai/flux-1/dev/redux", {"image_url": IMAGE, "image_size": {"width": 64, "height": 64}, "num_inference_steps": 2}, (64, 64)),
    ("fal-ai/flux-1/schnell/redux", {"image_url": IMAGE, "image_size": {"width": 48, "height": 80}, "num_inference_steps": 2}, (48, 80)),
    ("fal-ai/flux-pro/kontext", {"prompt": "make it blue", "image_url": IMAGE}, (128, 112)),
    ("fal-ai/flux-pro/kontext/max", {"prompt": "make it blue", "image_url": IMAGE, "aspect_ratio": "16:9"}, (176, 96)),
    ("fal-ai/flux-pro/kontext/multi", {"prompt": "both", "image_urls": [IMAGE, data_uri(64, 64)]}, (128, 112)),
    ("fal-ai/flux-pro/kontext/max/multi", {"prompt": "both", "image_urls": [IMAGE, IMAGE], "aspect_ratio": "1:1"}, (128, 128)),
    ("fal-ai/flux-pro/kontext/text-to-image", {"prompt": "a fox"}, (128, 128)),
    ("fal-ai/flux-pro/kontext/max/text-to-image", {"prompt": "a fox", "aspect_ratio": "9:16"}, (96, 176)),
    ("fal-ai/flux-lora", {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 2}, (64, 48)),
    ("fal-ai/flux-lora/image-to-image", {"prompt": "a fox", "image_url": IMAGE, "num_inference_steps": 2, "strength": 0.5}, (80, 64)),
    # Kontext [dev]'s own endpoints: match_input keeps the input's size, auto the nearest trained one
    ("fal-ai/flux-kontext/dev", {"prompt": "make it blue", "image_url": IMAGE, "num_inference_steps": 10}, (80, 64)),
    ("fal-ai/flux-kontext/dev", {"prompt": "make it blue", "image_url": IMAGE, "num_inference_steps": 10, "resolution_mode": "auto"}, (128, 112)),
    ("fal-ai/flux-kontext-lora", {"prompt": "make it blue", "image_url": IMAGE, "num_inference_steps": 10, "resolution_mode": "16:9"}, (176, 96)),
    ("fal-ai/flux/dev", {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 2}, (64, 48)),
    ("fal-ai/flux/schnell", {"prompt": "a fox", "image_size": {"width": 96, "height": 64}, "num_inference_steps": 2}, (96, 64)),
    ("fal-ai/flux/dev/image-to-image", {"prompt": "a fox", "image_url": IMAGE, "num_inference_steps": 10, "strength": 0.3}, (80, 64)),
    # FLUX.1 Krea [dev]: FLUX.1 [dev]'s architecture and pipelines, its own weights
    ("fal-ai/flux/krea", {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 2}, (64, 48)),
    ("fal-ai/flux/krea/image-to-image", {"prompt": "a fox", "image_url": IMAGE, "num_inference_steps": 10, "strength": 0.3}, (80, 64)),
    ("fal-ai/flux-krea-lora", {"prompt": "a fox", "image_size": {"width": 48, "height": 64}, "num_inference_steps": 2}, (48, 64)),
]


def published(payload: Any) -> Any:
    """The payload as the worker publishes it: each MediaBlob becomes a File object."""
    if isinstance(payload, MediaBlob):
        file = {"url": "https://media.test/x", "content_type": payload.content_type, "file_size": payload.size}
        return {**file, "width": payload.width, "height": payload.height}
    if isinstance(payload, dict):
        return {k: published(v) for k, v in payload.items()}
    if isinstance(payload, list):
        return [published(v) for v in payload]
    return payload


@pytest.mark.parametrize(("endpoint", "body", "size"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
async def test_endpoint_returns_images_of_the_reported_size(
    backend: LocalBackend, endpoint: str, body: dict[str, Any], size: tuple[int, int]
) -> None:
    """The result validates against the endpoint's output schema; each image's pixels
    have the width and height the result reports, and those are the expected size."""
    output = output_of((await run_one(backend, endpoint, body))[0])
    CATALOG[endpoint].output_model.model_validate(published(output.payload))
    (image,) = output.payload["images"]
    assert (image.width, image.height) == size
    assert pixels(image).size == size
    assert output.payload["has_nsfw_concepts"] == [False]
    assert output.payload["timings"]["inference"] > 0


@pytest.mark.parametrize(("preset", "size"), [("square", (512, 512)), ("landscape_16_9", (1024, 576))])
async def test_image_size_presets_map_to_fal_sizes(backend: LocalBackend, preset: str, size: tuple[int, int]) -> None:
    """fal's preset names give fal's pixel sizes."""
    body = {"prompt": "x", "image_size": preset, "num_inference_steps": 1}
    (image,) = output_of((await run_one(backend, "fal-ai/flux-1/schnell", body))[0]).payload["images"]
    assert pixels(image).size == size


async def test_custom_sizes_are_floored_to_multiples_of_16(backend: LocalBackend) -> None:
    """100x70 becomes 96x64, and 96x64 is what the result reports."""
    body = {"prompt": "x", "image_size": {"width": 100, "height": 70}, "num_inference_steps": 1}
    (image,) = output_of((await run_one(backend, "fal-ai/flux-1/schnell", body))[0]).payload["images"]
    assert (image.width, image.height) == (96, 64) == pixels(image).size


async def test_num_images_gives_that_many_images(backend: LocalBackend) -> None:
    """num_images maps to the images in one call, each with its NSFW flag."""
    body = {"prompt": "x", "image_size": {"width": 32, "height": 32}, "num_inference_steps": 1, "num_images": 3}
    output = output_of((await run_one(backend, "fal-ai/flux-1/dev", body))[0])
    assert len(output.payload["images"]) == 3
    assert output.payload["has_nsfw_concepts"] == [False, False, False]


@pytest.mark.parametrize(("fmt", "content_type", "magic"), [("jpeg", "image/jpeg", b"\xff\xd8"), ("png", "image/png", b"\x89PNG")])
async def test_output_format_sets_the_encoding(backend: LocalBackend, fmt: str, content_type: str, magic: bytes) -> None:
    """output_format picks JPEG or PNG bytes and content type."""
    body = {"prompt": "x", "image_size": {"width": 32, "height": 32}, "num_inference_steps": 1, "output_format": fmt}
    (image,) = output_of((await run_one(backend, "fal-ai/flux-1/schnell", body))[0]).payload["images"]
    assert image.content_type == content_type and image.read().startswith(magic)


async def test_redux_reports_an_empty_prompt(backend: LocalBackend) -> None:
    """Redux endpoints take no prompt; the result's prompt is ''."""
    body = {"image_url": IMAGE, "image_size": {"width": 32, "height": 32}, "num_inference_steps": 1}
    output = output_of((await run_one(backend, "fal-ai/flux-1/dev/redux", body))[0])
    assert output.payload["prompt"] == ""


async def test_text_to_image_reports_its_prompt(backend: LocalBackend) -> None:
    """The prompt used comes back in the result."""
    body = {"prompt": "a lighthouse", "image_size": {"width": 32, "height": 32}, "num_inference_steps": 1}
    output = output_of((await run_one(backend, "fal-ai/flux-1/dev", body))[0])
    assert output.payload["prompt"] == "a lighthouse"


async def test_an_unfetchable_image_fails_that_request_on_its_field(backend: LocalBackend) -> None:
    """A bad image_url is a 422 naming the field, not a crash."""
    from openfal.errors import InputFetchFailed

    body = {"prompt": "x", "image_url": "data:image/png;base64,bm90IGFuIGltYWdl", "num_inference_steps": 10}
    result, _ = await run_one(backend, "fal-ai/flux-1/dev/image-to-image", body)
    assert isinstance(result, InputFetchFailed) and result.field == "image_url"


async def test_an_endpoint_it_does_not_serve_is_model_unavailable(backend: LocalBackend) -> None:
    """A job routed here for an endpoint without a local model fails cleanly."""
    from openfal.backends.base import Job
    from openfal.errors import ModelUnavailable

    (result,) = await backend.run([Job(request_id="r", endpoint_id="fal-ai/flux-pro/v1.1-ultra", input={"prompt": "x"})])
    assert isinstance(result, ModelUnavailable) and "does not serve" in result.message


async def test_status_reports_the_device_and_the_pipelines_kept_warm(backend: LocalBackend) -> None:
    """What the worker registry shows operators: device, dtype, loaded pipelines and
    their bytes against the memory budget."""
    await run_one(backend, "fal-ai/flux-1/schnell", {"prompt": "p", "image_size": {"width": 64, "height": 64}})
    status = backend.status()
    assert status["started"] is True and status["device"] == "cpu" and status["dtype"] == "float32"
    assert {"model": "flux-schnell", "pipeline": "FluxPipeline"} in status["loaded"]
    assert 0 < status["loaded_bytes"] <= status["budget_bytes"]
