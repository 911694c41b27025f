"""FLUX.2 [dev] and [klein] 4B/9B on the local engine (issue 21): fal's ranges, the nine
endpoints through the real queue on the tiny models, edits with one and four reference
images, LoRAs, clean 503s for missing weights, and memory plans from the real configs.

The tiny FLUX.2 models are built in code (families/flux2.py) and loaded through the real
``from_pretrained`` path. FLUX.2's smallest output is 512x512 (fal's range), so text
requests run at 512; edits take their (small) first reference image's size.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from openfal.backends.base import Output
from openfal.backends.builtin import BuiltinBackend
from openfal.backends.local import LocalBackend, registry
from openfal.backends.local.families import flux2
from openfal.backends.local.memory_plan import GIB, plan_model
from openfal.config import Settings
from openfal.endpoints.catalog import CATALOG, validate_input
from openfal.errors import InputInvalid, InputRejected, ModelUnavailable
from openfal.events import Log
from tests.local.helpers import TEST_OPTIONS, data_uri, make_job, output_of
from tests.local.lora_makers import linear_shapes, peft_lora
from tests.support import running_app, wait_status

#: the async tests share the module's event loop (and so its backend)
MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

TEXT_BODY = {"prompt": "a fox", "image_size": {"width": 512, "height": 512}, "num_inference_steps": 4, "seed": 3}

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalBackend]:
    """One backend for the module (loading the tiny FLUX.2 pipelines once); installed
    LoRAs are found by name in ``loras``."""
    data = tmp_path_factory.mktemp("flux2")
    (data / "loras").mkdir()
    settings = Settings(data_dir=data, models_dir=models_dir, demo=True, allow_private_urls=True, loras_dir=data / "loras", lora_max_rank=16)
    local = LocalBackend(settings, options=TEST_OPTIONS)
    await local.start()
    yield local
    await local.close()


async def run(backend: LocalBackend, endpoint_id: str, body: dict[str, Any]) -> tuple[Any, Any]:
    job, recorder = make_job(endpoint_id, body)
    (result,) = await backend.run([job])
    return result, recorder


def pixels(result: Any) -> np.ndarray:
    blob = output_of(result).payload["images"][0]
    return np.asarray(Image.open(io.BytesIO(blob.read())).convert("RGB"), dtype=np.int16)


# -- schemas ---------------------------------------------------------------------------------


# names, required fields, defaults and enumerations against fal's tables: tests/test_fal_schemas.py


@pytest.mark.parametrize("size", [{"width": 511, "height": 512}, {"width": 512, "height": 2049}])
def test_image_size_is_512_to_2048_per_side(size: dict[str, int]) -> None:
    with pytest.raises(InputInvalid):
        validate_input(CATALOG["fal-ai/flux-2"], {"prompt": "x", "image_size": size})


def test_edits_take_at_most_four_references_and_loras_at_most_three() -> None:
    urls = [data_uri(64, 64)] * 5
    with pytest.raises(InputInvalid):
        validate_input(CATALOG["fal-ai/flux-2/edit"], {"prompt": "x", "image_urls": urls})
    with pytest.raises(InputInvalid):
        validate_input(CATALOG["fal-ai/flux-2/lora"], {"prompt": "x", "loras": [{"path": "a"}] * 4})


def test_klein_9b_steps_are_4_to_8() -> None:
    with pytest.raises(InputInvalid):
        validate_input(CATALOG["fal-ai/flux-2/klein/9b"], {"prompt": "x", "num_inference_steps": 9})


def test_each_endpoint_states_its_licence() -> None:
    assert not CATALOG["fal-ai/flux-2"].licence.commercial
    assert not CATALOG["fal-ai/flux-2/klein/9b/edit"].licence.commercial
    assert CATALOG["fal-ai/flux-2/klein/4b/lora"].licence.name == "apache-2.0"


# -- through the queue -----------------------------------------------------------------------

REFERENCE = data_uri(96, 80, (30, 120, 200))
BODIES = {
    **{e: TEXT_BODY for e in ("fal-ai/flux-2", "fal-ai/flux-2/lora", "fal-ai/flux-2/klein/4b", "fal-ai/flux-2/klein/4b/lora", "fal-ai/flux-2/klein/9b")},
    **{e: {"prompt": "make it blue", "image_urls": [REFERENCE], "num_inference_steps": 4, "seed": 3}
       for e in ("fal-ai/flux-2/edit", "fal-ai/flux-2/lora/edit", "fal-ai/flux-2/klein/4b/edit", "fal-ai/flux-2/klein/9b/edit")},
}  # fmt: skip


@MODULE_LOOP
async def test_every_flux2_endpoint_completes_through_the_queue(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """POST each endpoint over HTTP -> a real worker runs it on the tiny model -> fal's
    Flux2Output: a PNG of 512x512 (text) or of the reference's 96x80 (edit), the seed,
    has_nsfw_concepts and the prompt."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("queue"), models_dir=models_dir, demo=True, allow_private_urls=True,
        poll_interval_seconds=0.05, heartbeat_seconds=0.5,
    )  # fmt: skip
    backends: dict[str, Any] = {"builtin": BuiltinBackend(), "local": LocalBackend(settings, options=TEST_OPTIONS)}
    async with running_app(settings, backends) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        submitted = {}
        for endpoint_id, body in BODIES.items():
            response = await app.client.post(f"/{endpoint_id}", json=body, headers=auth)
            assert response.status_code == 200, (endpoint_id, response.text)
            submitted[endpoint_id] = response.json()
        for endpoint_id, urls in submitted.items():
            status = await wait_status(app.client, urls["status_url"], auth, timeout=300)
            assert status.json()["status"] == "COMPLETED", (endpoint_id, status.text)
            result = (await app.client.get(urls["response_url"], headers=auth)).json()
            assert set(result) == {"images", "timings", "seed", "has_nsfw_concepts", "prompt"}
            (image,) = result["images"]
            size = (512, 512) if "image_size" in BODIES[endpoint_id] else (96, 80)
            assert (image["width"], image["height"], image["content_type"]) == (*size, "image/png"), endpoint_id
            assert result["seed"] == 3 and result["has_nsfw_concepts"] == [False] and result["prompt"] == BODIES[endpoint_id]["prompt"]
        admin = {"Authorization": f"Key {await app.key('admin', admin=True)}"}
        metrics = (await app.client.get("/metrics", headers=admin)).text
        assert all(f'endpoint="{endpoint_id}"' in metrics for endpoint_id in BODIES)
        spec = (await app.client.get("/openapi/queue/openapi.json", params={"endpoint_id": "fal-ai/flux-2/edit"})).json()
        assert spec["info"]["license"]["name"] == "flux-non-commercial" and spec["info"]["x-openfal-licence"]["commercial"] is False
        assert "image_urls" in json.dumps(spec["components"]["schemas"])


# -- sizes, references, formats ------------------------------------------------------------


@MODULE_LOOP
async def test_custom_sizes_are_floored_to_16(backend: LocalBackend) -> None:
    result, _ = await run(backend, "fal-ai/flux-2/klein/4b", {**TEXT_BODY, "image_size": {"width": 530, "height": 520}})
    (image,) = output_of(result).payload["images"]
    assert (image.width, image.height) == (528, 512)


@MODULE_LOOP
async def test_an_edit_with_four_references_takes_the_first_ones_size(backend: LocalBackend) -> None:
    urls = [data_uri(112, 64, (200, 30, 30)), data_uri(64, 64, (30, 200, 30)), data_uri(80, 96, (30, 30, 200)), data_uri(64, 128)]
    four, _ = await run(backend, "fal-ai/flux-2/klein/4b/edit", {"prompt": "combine them", "image_urls": urls, "seed": 1})
    one, _ = await run(backend, "fal-ai/flux-2/klein/4b/edit", {"prompt": "combine them", "image_urls": urls[:1], "seed": 1})
    assert pixels(four).shape == pixels(one).shape == (64, 112, 3)
    assert np.abs(pixels(four) - pixels(one)).max() > 0  # the other three references take part


@MODULE_LOOP
async def test_image_size_overrides_the_references_size(backend: LocalBackend) -> None:
    body = {"prompt": "x", "image_urls": [data_uri(64, 64)], "image_size": "square", "seed": 1}
    result, _ = await run(backend, "fal-ai/flux-2/edit", body)
    assert pixels(result).shape == (512, 512, 3)


@MODULE_LOOP
async def test_a_reference_under_64_px_is_a_422_on_its_field(backend: LocalBackend) -> None:
    result, _ = await run(backend, "fal-ai/flux-2/klein/9b/edit", {"prompt": "x", "image_urls": [data_uri(64, 64), data_uri(48, 200)]})
    assert isinstance(result, InputRejected) and result.detail[0]["loc"] == ["body", "image_urls", 1]


@MODULE_LOOP
async def test_webp_output_is_encoded_as_webp(backend: LocalBackend) -> None:
    result, _ = await run(backend, "fal-ai/flux-2/klein/9b", {**TEXT_BODY, "output_format": "webp"})
    (image,) = output_of(result).payload["images"]
    assert image.content_type == "image/webp" and image.read()[8:12] == b"WEBP"


@MODULE_LOOP
async def test_prompt_expansion_is_logged_as_not_applied(backend: LocalBackend) -> None:
    result, recorder = await run(backend, "fal-ai/flux-2", {**TEXT_BODY, "enable_prompt_expansion": True})
    assert isinstance(result, Output)
    warnings = [e.message for e in recorder.of(Log) if e.level == "WARN"]
    assert any("enable_prompt_expansion was not applied" in m for m in warnings)


@MODULE_LOOP
async def test_the_same_seed_gives_the_same_image_and_guidance_changes_dev(backend: LocalBackend) -> None:
    a, _ = await run(backend, "fal-ai/flux-2", TEXT_BODY)
    b, _ = await run(backend, "fal-ai/flux-2", TEXT_BODY)
    c, _ = await run(backend, "fal-ai/flux-2", {**TEXT_BODY, "guidance_scale": 9.0})
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(c))


# -- LoRAs -----------------------------------------------------------------------------------

#: the double blocks' attention and the single blocks' fused QKV+MLP projection
FLUX2_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.to_qkv_mlp_proj")


def _install_lora(backend: LocalBackend, models_dir: Path, model: str, name: str) -> str:
    from diffusers import Flux2Transformer2DModel

    transformer = Flux2Transformer2DModel.from_pretrained(str(models_dir / "tiny" / model / "transformer"))
    folder = backend.settings.loras_dir
    assert folder is not None
    peft_lora(linear_shapes(transformer), folder / f"{name}.safetensors", targets=FLUX2_TARGETS, magnitude=2.0)
    return name


@pytest.mark.parametrize(("endpoint_id", "model"), [("fal-ai/flux-2/lora", "flux-2-dev"), ("fal-ai/flux-2/klein/4b/lora", "flux-2-klein-4b")])
@MODULE_LOOP
async def test_a_lora_changes_the_image_and_scale_zero_is_the_base_model(
    backend: LocalBackend, models_dir: Path, endpoint_id: str, model: str
) -> None:
    name = _install_lora(backend, models_dir, model, f"style-{model}")
    base, _ = await run(backend, endpoint_id, TEXT_BODY)
    styled, recorder = await run(backend, endpoint_id, {**TEXT_BODY, "loras": [{"path": name, "scale": 1.0}]})
    zero, _ = await run(backend, endpoint_id, {**TEXT_BODY, "loras": [{"path": name, "scale": 0.0}]})
    assert np.abs(pixels(styled) - pixels(base)).mean() > 1
    assert np.abs(pixels(zero) - pixels(base)).max() <= 1
    assert any("LoRAs applied" in e.message for e in recorder.of(Log))


@MODULE_LOOP
async def test_a_flux1_lora_is_refused_on_flux2(backend: LocalBackend, models_dir: Path) -> None:
    from diffusers import FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(str(models_dir / "tiny" / "flux-dev" / "transformer"))
    folder = backend.settings.loras_dir
    assert folder is not None
    peft_lora(linear_shapes(transformer), folder / "flux1.safetensors", targets=("ff.net.2",))
    result, _ = await run(backend, "fal-ai/flux-2/lora", {**TEXT_BODY, "loras": [{"path": "flux1"}]})
    assert isinstance(result, InputRejected) and result.detail[0]["loc"] == ["body", "loras", 0, "path"]


# -- loading -----------------------------------------------------------------------------------


def test_dev_is_saved_in_the_real_layout_and_loads_without_torchvision(models_dir: Path) -> None:
    """model_index.json names PixtralProcessor as FLUX.2-dev's does; the family reads the
    folder's tokenizer itself, so loading needs no torchvision."""
    import torch

    from openfal.backends.local.cache import ModelCache, PipelineSpec

    folder = models_dir / "tiny" / "flux-2-dev"
    assert json.loads((folder / "model_index.json").read_text())["tokenizer"] == ["transformers", "PixtralProcessor"]
    cache = ModelCache(device=torch.device("cpu"), dtype=torch.float32, budget_bytes=2**34)
    (pipe,) = cache.get(PipelineSpec("flux-2-dev", folder, "Flux2Pipeline"))
    assert type(pipe.text_encoder).__name__ == "Mistral3ForConditionalGeneration"
    assert pipe.tokenizer.chat_template is not None


def test_the_three_models_share_one_vae(models_dir: Path) -> None:
    files = [(models_dir / "tiny" / m / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() for m in ("flux-2-dev", "flux-2-klein-4b", "flux-2-klein-9b")]
    assert files[0] == files[1] == files[2]


@pytest.mark.parametrize(
    ("model", "repo", "gated"),
    [("flux-2-dev", "black-forest-labs/FLUX.2-dev", True), ("flux-2-klein-4b", "black-forest-labs/FLUX.2-klein-4B", False),
     ("flux-2-klein-9b", "black-forest-labs/FLUX.2-klein-9B", True)],
)  # fmt: skip
def test_a_missing_model_names_the_command_and_the_licence_to_accept(tmp_path: Path, model: str, repo: str, gated: bool) -> None:
    settings = Settings(data_dir=tmp_path, models_dir=tmp_path / "empty")
    with pytest.raises(ModelUnavailable) as caught:
        registry.model_folder(model, settings)
    message = caught.value.message
    assert f"openfal models download {model}" in message and repo in message
    assert ("flux-non-commercial" in message and "accept its licence" in message) is gated


@MODULE_LOOP
async def test_a_request_for_missing_weights_is_a_503(tmp_path: Path) -> None:
    local = LocalBackend(Settings(data_dir=tmp_path, models_dir=tmp_path / "empty"), options=TEST_OPTIONS)
    job, _ = make_job("fal-ai/flux-2/klein/4b", TEXT_BODY)
    (result,) = await local.run([job])
    await local.close()
    assert isinstance(result, ModelUnavailable) and result.status_code == 503


# -- memory plans (real configs on the meta device) -------------------------------------------


def test_dev_sizes_come_from_the_real_configs() -> None:
    from openfal.backends.local.memory_plan import component_sizes

    sizes = component_sizes("flux-2-dev")
    assert 29 < sizes["transformer"].bf16 / 2 / 1e9 < 33  # 32B parameters
    assert 23 < sizes["text_encoder"].bf16 / 2 / 1e9 < 25  # Mistral Small 3.1, 24B


def test_klein_4b_fits_24_gib_with_everything_resident_in_bf16() -> None:
    plan = plan_model("flux-2-klein-4b", 24 * GIB)
    assert plan.fits and plan.offload == "none" and plan.transformer_dtype == "bfloat16" and plan.text_encoder_dtype == "bfloat16"
    assert all(where.startswith("gpu") for where in plan.where.values())


def test_at_48_gib_klein_9b_is_resident_in_bf16_and_dev_needs_model_offload() -> None:
    nine = plan_model("flux-2-klein-9b", 48 * GIB)
    assert nine.fits and nine.offload == "none" and nine.transformer_dtype == "bfloat16"
    dev = plan_model("flux-2-dev", 48 * GIB)
    assert dev.fits and dev.offload == "model"


def test_dev_fits_80_gib_with_float8_transformer_and_text_encoder_resident() -> None:
    plan = plan_model("flux-2-dev", 80 * GIB)
    assert plan.fits and plan.resident_gib <= 80 and plan.offload == "none"
    assert plan.where["transformer"] == "gpu float8_e4m3fn" and plan.where["text_encoder"] == "gpu float8_e4m3fn"


def test_dev_fits_141_gib_resident_in_bf16() -> None:
    plan = plan_model("flux-2-dev", 141 * GIB)
    assert plan.fits and plan.offload == "none" and plan.transformer_dtype == "bfloat16" and plan.text_encoder_dtype == "bfloat16"


def test_dev_does_not_fit_24_gib_and_says_so() -> None:
    assert not plan_model("flux-2-dev", 24 * GIB).fits


def test_an_edit_plans_for_its_reference_tokens() -> None:
    estimate = flux2.MODELS[1].activation_bytes
    assert estimate is not None and estimate(1024, 1024, 1) > 2 * 16 * 4096 * 3072 * 2


def test_download_fetches_only_the_pipeline_components(models_dir: Path) -> None:
    """FLUX.2-dev's repository also holds BFL's single-file checkpoints at its root: only
    model_index.json and the folders it names are downloaded."""
    from openfal.backends.local.install import pipeline_patterns

    index = json.loads((models_dir / "tiny" / "flux-2-dev" / "model_index.json").read_text())
    assert pipeline_patterns(index) == ["model_index.json", "scheduler/*", "text_encoder/*", "tokenizer/*", "transformer/*", "vae/*"]
