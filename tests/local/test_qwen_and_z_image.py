"""Qwen-Image and Z-Image Turbo on the tiny set: fal's schemas and defaults, the sizes
each endpoint produces, Qwen edits with one and several images, fields the local
pipelines cannot honour named in the logs, and memory plans from the real configs."""

from __future__ import annotations

from typing import Any

import pytest

from openfal.backends.local import LocalBackend
from openfal.backends.local.memory_plan import GIB, component_sizes, plan_model
from openfal.endpoints.catalog import CATALOG, validate_input
from openfal.events import Log
from tests.local.helpers import data_uri, output_of, pixels, run_one
from tests.local.test_endpoints import published

RED = data_uri(80, 64)  # aspect 1.25
SQUARE = data_uri(64, 64, (20, 200, 20))

CASES: list[tuple[str, dict[str, Any], tuple[int, int]]] = [
    ("fal-ai/qwen-image", {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 2}, (64, 48)),
    ("fal-ai/qwen-image-2512", {"prompt": "a fox", "image_size": {"width": 48, "height": 64}, "num_inference_steps": 2}, (48, 64)),
    ("fal-ai/qwen-image-2512/lora", {"prompt": "a fox", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 2}, (64, 64)),
    # without image_size an edit has the last image's size
    ("fal-ai/qwen-image-edit-2511", {"prompt": "make it blue", "image_urls": [RED], "num_inference_steps": 2}, (80, 64)),
    ("fal-ai/qwen-image-edit-2511/lora", {"prompt": "make it blue", "image_urls": [RED], "num_inference_steps": 2, "image_size": {"width": 64, "height": 48}}, (64, 48)),
    ("fal-ai/z-image/turbo", {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 2}, (64, 48)),
    ("fal-ai/z-image/turbo/lora", {"prompt": "a fox", "image_size": {"width": 96, "height": 64}, "num_inference_steps": 2}, (96, 64)),
    # image_size auto (the default) keeps the input image's size
    ("fal-ai/z-image/turbo/image-to-image", {"prompt": "a fox", "image_url": RED, "num_inference_steps": 4}, (80, 64)),
    ("fal-ai/z-image/turbo/image-to-image", {"prompt": "a fox", "image_url": RED, "num_inference_steps": 4, "image_size": "square"}, (512, 512)),
]  # fmt: skip


@pytest.mark.parametrize(("endpoint", "body", "size"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
async def test_endpoint_returns_images_of_the_reported_size(
    backend: LocalBackend, endpoint: str, body: dict[str, Any], size: tuple[int, int]
) -> None:
    output = output_of((await run_one(backend, endpoint, body))[0])
    CATALOG[endpoint].output_model.model_validate(published(output.payload))
    (image,) = output.payload["images"]
    assert (image.width, image.height) == size == pixels(image).size
    assert output.payload["has_nsfw_concepts"] == [False] and output.payload["prompt"] == body["prompt"]


# -- fal's schemas ---------------------------------------------------------------------------

#: the defaults fal declares (fal-endpoints-2026.md), field by field
DEFAULTS: dict[str, dict[str, Any]] = {
    "fal-ai/qwen-image": {
        "acceleration": "none", "enable_safety_checker": True, "guidance_scale": 2.5, "image_size": "landscape_4_3", "negative_prompt": " ",
        "num_images": 1, "num_inference_steps": 30, "output_format": "png", "loras": [], "use_turbo": False,
    },
    "fal-ai/qwen-image-2512": {
        "acceleration": "regular", "enable_safety_checker": True, "guidance_scale": 5.0, "image_size": "landscape_4_3", "negative_prompt": "",
        "num_images": 1, "num_inference_steps": 28, "output_format": "png",
    },
    "fal-ai/qwen-image-2512/lora": {"acceleration": "regular", "guidance_scale": 4.0, "negative_prompt": "", "num_inference_steps": 28, "loras": []},
    "fal-ai/qwen-image-edit-2511": {
        "acceleration": "regular", "guidance_scale": 4.5, "image_size": None, "negative_prompt": "", "num_inference_steps": 28, "output_format": "png",
    },
    "fal-ai/qwen-image-edit-2511/lora": {"guidance_scale": 4.5, "image_size": None, "loras": []},
    "fal-ai/z-image/turbo": {
        "acceleration": "regular", "enable_prompt_expansion": False, "enable_safety_checker": True, "image_size": "landscape_4_3",
        "num_images": 1, "num_inference_steps": 8, "output_format": "png",
    },
    "fal-ai/z-image/turbo/lora": {"num_inference_steps": 8, "loras": [], "output_format": "png"},
    "fal-ai/z-image/turbo/image-to-image": {"image_size": "auto", "strength": 0.6, "num_inference_steps": 8, "output_format": "png"},
}  # fmt: skip
REQUIRED = {"fal-ai/qwen-image-edit-2511": {"image_urls": [RED]}, "fal-ai/qwen-image-edit-2511/lora": {"image_urls": [RED]}, "fal-ai/z-image/turbo/image-to-image": {"image_url": RED}}  # fmt: skip


@pytest.mark.parametrize("endpoint", sorted(DEFAULTS))
def test_schema_defaults_are_fals(endpoint: str) -> None:
    data = validate_input(CATALOG[endpoint], {"prompt": "p", **REQUIRED.get(endpoint, {})})
    assert {name: data[name] for name in DEFAULTS[endpoint]} == DEFAULTS[endpoint]


@pytest.mark.parametrize(
    ("endpoint", "field", "bad"),
    [
        ("fal-ai/qwen-image", "output_format", "webp"),  # fal-ai/qwen-image encodes jpeg or png only
        ("fal-ai/qwen-image", "num_inference_steps", 1),
        ("fal-ai/qwen-image-2512", "guidance_scale", 21),
        ("fal-ai/z-image/turbo", "num_inference_steps", 9),
        ("fal-ai/z-image/turbo", "num_images", 5),
        ("fal-ai/z-image/turbo/lora", "loras", [{"path": "a"}] * 4),
        ("fal-ai/qwen-image-edit-2511", "image_urls", []),
    ],
)
def test_values_outside_fals_ranges_are_422(endpoint: str, field: str, bad: Any) -> None:
    from openfal.errors import InputInvalid

    with pytest.raises(InputInvalid) as error:
        validate_input(CATALOG[endpoint], {"prompt": "p", **REQUIRED.get(endpoint, {}), field: bad})
    assert error.value.detail[0]["loc"][-1] == field or field in [str(p) for p in error.value.detail[0]["loc"]]


@pytest.mark.parametrize("endpoint", ["fal-ai/qwen-image-2512", "fal-ai/z-image/turbo"])
async def test_webp_is_encoded_where_fal_offers_it(backend: LocalBackend, endpoint: str) -> None:
    body = {"prompt": "a fox", "image_size": {"width": 32, "height": 32}, "num_inference_steps": 2, "output_format": "webp"}
    (image,) = output_of((await run_one(backend, endpoint, body))[0]).payload["images"]
    assert image.content_type == "image/webp" and image.read()[8:12] == b"WEBP"


def test_every_model_is_apache_2_and_priced() -> None:
    for endpoint in DEFAULTS:
        spec = CATALOG[endpoint]
        assert spec.licence is not None and spec.licence.name == "apache-2.0" and spec.licence.commercial
        assert spec.price["per_megapixel"] > 0


# -- Qwen edits ----------------------------------------------------------------------------------


async def test_an_edit_takes_several_images_and_follows_the_last_ones_size(backend: LocalBackend) -> None:
    body = {"prompt": "put them together", "image_urls": [RED, SQUARE], "num_inference_steps": 2, "num_images": 2, "seed": 3}
    output = output_of((await run_one(backend, "fal-ai/qwen-image-edit-2511", body))[0])
    images = output.payload["images"]
    assert [(i.width, i.height) for i in images] == [(64, 64), (64, 64)]
    assert pixels(images[0]).tobytes() != pixels(images[1]).tobytes()  # seed, seed + 1


async def test_the_edit_depends_on_its_input_images(backend: LocalBackend) -> None:
    """The references reach the model: the same request with another image differs."""
    body = {
        "prompt": "make it blue",
        "num_inference_steps": 2,
        "seed": 5,
        "output_format": "png",
        "image_size": {"width": 64, "height": 64},
    }
    red = output_of((await run_one(backend, "fal-ai/qwen-image-edit-2511", {**body, "image_urls": [RED]}))[0])
    green = output_of((await run_one(backend, "fal-ai/qwen-image-edit-2511", {**body, "image_urls": [SQUARE]}))[0])
    assert pixels(red.payload["images"][0]).tobytes() != pixels(green.payload["images"][0]).tobytes()


# -- what is not applied is said ---------------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "field"), [("fal-ai/qwen-image", "use_turbo"), ("fal-ai/z-image/turbo", "enable_prompt_expansion")])
async def test_fields_the_local_pipeline_cannot_honour_are_named_in_the_logs(backend: LocalBackend, endpoint: str, field: str) -> None:
    body = {"prompt": "a fox", "image_size": {"width": 32, "height": 32}, "num_inference_steps": 2, field: True}
    result, recorder = await run_one(backend, endpoint, body)
    output_of(result)
    assert [e for e in recorder.of(Log) if field in e.message and "not applied" in e.message and e.level == "WARN"]


async def test_guidance_and_the_negative_prompt_change_qwen_images(backend: LocalBackend) -> None:
    body = {"prompt": "a fox", "image_size": {"width": 32, "height": 32}, "num_inference_steps": 2, "seed": 1, "output_format": "png"}

    async def image(**extra: Any) -> bytes:
        output = output_of((await run_one(backend, "fal-ai/qwen-image-2512", {**body, **extra}))[0])
        return pixels(output.payload["images"][0]).tobytes()

    plain = await image(guidance_scale=1.0)
    assert await image(guidance_scale=6.0, negative_prompt="blurry") != plain
    assert await image(guidance_scale=6.0, negative_prompt="blurry") != await image(guidance_scale=6.0, negative_prompt="sharp")
    assert await image(guidance_scale=1.0, negative_prompt="ignored without guidance") == plain


# -- memory plans from the real configs -------------------------------------------------------


def test_sizes_come_from_the_real_qwen_image_and_z_image_configs() -> None:
    qwen = component_sizes("qwen-image")
    assert round(qwen["transformer"].bf16 / 2 / 1e9, 1) == 20.4  # the 20B MMDiT
    assert round(qwen["text_encoder"].bf16 / 2 / 1e9, 1) == 8.3  # Qwen2.5-VL-7B with its vision tower
    z = component_sizes("z-image-turbo")
    assert round(z["transformer"].bf16 / 2 / 1e9, 1) == 6.2  # the 6B single-stream DiT
    assert round(z["text_encoder"].bf16 / 2 / 1e9, 1) == 4.0  # Qwen3-4B


@pytest.mark.parametrize("gib", [48, 80, 141])
def test_qwen_image_fits_48_80_and_141_gib_cards(gib: int) -> None:
    for model in ("qwen-image", "qwen-image-2512", "qwen-image-edit-2511"):
        plan = plan_model(model, gib * GIB)
        assert plan.fits and plan.resident_gib <= gib, (model, plan)


def test_qwen_image_is_resident_bf16_on_80_gib_and_float8_on_48() -> None:
    for gib in (80, 141):
        assert (plan_model("qwen-image", gib * GIB).offload, plan_model("qwen-image", gib * GIB).transformer_dtype) == ("none", "bfloat16")
    assert plan_model("qwen-image", 48 * GIB).transformer_dtype == "float8_e4m3fn"
    assert (
        plan_model("qwen-image", 48 * GIB, fp8_supported=False).offload == "model"
    )  # no float8: 38 GiB of bf16 weights plus the encoder do not fit


def test_z_image_turbo_is_all_resident_in_bf16_on_24_gib() -> None:
    plan = plan_model("z-image-turbo", 24 * GIB)
    assert plan.fits and (plan.offload, plan.transformer_dtype, plan.text_encoder_dtype) == ("none", "bfloat16", "bfloat16")
