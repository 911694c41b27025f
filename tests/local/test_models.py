"""Where weights come from and how they are loaded: the tiny set on disk, the registry,
the model cache (sharing and eviction), and the install commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from openfal.backends.local import LocalBackend, registry, sizes
from openfal.backends.local.cache import ModelCache, PipelineSpec
from openfal.backends.local.cli import models as models_cli
from openfal.backends.local.install import DownloadFailed, download_model, list_models
from openfal.backends.local.tiny import build_tiny_models, tiny_dir, tiny_models
from openfal.errors import ModelUnavailable
from tests.local.helpers import TEST_OPTIONS, output_of, run_one

CPU = torch.device("cpu")


def cache(budget: int = 2**40) -> ModelCache:
    return ModelCache(device=CPU, dtype=torch.float32, budget_bytes=budget)


def spec(models_dir: Path, model: str, class_name: str = "FluxPipeline", without: frozenset[str] = frozenset()) -> PipelineSpec:
    return PipelineSpec(model, tiny_dir(models_dir) / model, class_name, without)


# -- the tiny set ------------------------------------------------------------------------------


def test_the_tiny_set_is_saved_in_the_diffusers_layout(models_dir: Path) -> None:
    """Every model has a folder with its index (pipelines) or config (checker)."""
    root = tiny_dir(models_dir)
    for name in tiny_models():
        assert registry.is_installed(root / name), name
    index = json.loads((root / "flux-dev" / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline" and index["transformer"] == ["diffusers", "FluxTransformer2DModel"]


def test_building_again_leaves_the_set_untouched(models_dir: Path) -> None:
    """build_tiny_models is idempotent: existing folders are not rewritten."""
    weights = tiny_dir(models_dir) / "flux-dev" / "transformer" / "diffusion_pytorch_model.safetensors"
    before = weights.stat().st_mtime_ns
    build_tiny_models(models_dir)
    assert weights.stat().st_mtime_ns == before


def test_tiny_models_reload_with_flux_shapes(models_dir: Path) -> None:
    """Loaded back with from_pretrained(local_files_only=True): dev and Kontext embed
    guidance, schnell does not; the VAE scales by 8 into 16 channels (64 packed)."""
    models = cache()
    dev, schnell, kontext = models.get(
        spec(models_dir, "flux-dev"), spec(models_dir, "flux-schnell"), spec(models_dir, "flux-kontext-dev", "FluxKontextPipeline")
    )
    assert dev.transformer.config.guidance_embeds and kontext.transformer.config.guidance_embeds
    assert not schnell.transformer.config.guidance_embeds
    assert dev.vae_scale_factor == 8 and dev.transformer.config.in_channels == 64
    assert not dev.transformer.training and not dev.text_encoder_2.training


def test_preferred_kontext_resolutions_match_diffusers() -> None:
    """The copy kept to compute batch keys without diffusers equals diffusers' list."""
    from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

    assert sizes.PREFERRED_KONTEXT_RESOLUTIONS == list(PREFERRED_KONTEXT_RESOLUTIONS)


# -- the cache -----------------------------------------------------------------------------------


def test_models_shipping_the_same_encoders_share_them(models_dir: Path) -> None:
    """dev and schnell have byte-identical text encoders and VAE: loaded once, shared;
    their transformers differ."""
    models = cache()
    (dev,) = models.get(spec(models_dir, "flux-dev"))
    (schnell,) = models.get(spec(models_dir, "flux-schnell"))
    assert schnell.text_encoder_2 is dev.text_encoder_2 and schnell.vae is dev.vae
    assert schnell.transformer is not dev.transformer


def test_a_second_pipeline_class_reuses_the_loaded_modules(models_dir: Path) -> None:
    """img2img over dev is built from dev's modules, with a scheduler of its own."""
    models = cache()
    (t2i,) = models.get(spec(models_dir, "flux-dev"))
    size = models.loaded_bytes()
    (i2i,) = models.get(spec(models_dir, "flux-dev", "FluxImg2ImgPipeline"))
    assert type(i2i).__name__ == "FluxImg2ImgPipeline"
    assert i2i.transformer is t2i.transformer and i2i.vae is t2i.vae
    assert i2i.scheduler is not t2i.scheduler
    assert models.loaded_bytes() == size


def test_the_redux_base_loads_without_text_encoders(models_dir: Path) -> None:
    """Alone, the Redux base is loaded with no text encoders (it takes embeddings)."""
    (base,) = cache().get(spec(models_dir, "flux-dev", without=frozenset({"text_encoder", "text_encoder_2"})))
    assert base.text_encoder is None and base.text_encoder_2 is None and base.transformer is not None


def test_least_recently_used_models_are_evicted_past_the_budget(models_dir: Path) -> None:
    """With a budget of exactly dev's bytes, loading schnell (which shares dev's text
    encoders and VAE but adds a transformer) drops dev, and using dev again drops
    schnell; what stays loaded fits the budget."""
    probe = cache()
    probe.get(spec(models_dir, "flux-dev"))
    budget = probe.loaded_bytes()
    models = cache(budget=budget)
    models.get(spec(models_dir, "flux-dev"))
    (schnell,) = models.get(spec(models_dir, "flux-schnell"))
    assert [s.model for s in models.loaded()] == ["flux-schnell"]
    assert schnell.text_encoder_2 is not None and models.loaded_bytes() <= budget
    models.get(spec(models_dir, "flux-dev"))
    assert [s.model for s in models.loaded()] == ["flux-dev"]
    assert models.loaded_bytes() <= budget


def test_pipelines_needed_together_are_not_evicted_by_each_other(models_dir: Path) -> None:
    """The Redux prior and its base are both kept while one run needs them, even over
    a zero budget."""
    models = cache(budget=0)
    prior, base = models.get(spec(models_dir, "flux-redux-dev", "FluxPriorReduxPipeline"), spec(models_dir, "flux-dev"))
    assert len(models.loaded()) == 2 and prior.image_encoder is not None and base.transformer is not None


def test_the_cache_loads_in_the_configured_dtype(models_dir: Path) -> None:
    """dtype from settings reaches from_pretrained (bf16 here, on CPU)."""
    models = ModelCache(device=CPU, dtype=torch.bfloat16, budget_bytes=2**40)
    (pipe,) = models.get(spec(models_dir, "flux-schnell"))
    assert pipe.transformer.dtype == torch.bfloat16


# -- the registry -------------------------------------------------------------------------------


def test_a_missing_model_is_model_unavailable_with_the_install_command(make_settings: Any, tmp_path: Path) -> None:
    """Outside demo mode with nothing installed, the error names the model, its
    repository and `openfal models download NAME`."""
    settings = make_settings(demo=False, models_dir=tmp_path / "empty")
    with pytest.raises(ModelUnavailable) as caught:
        registry.model_folder("flux-dev", settings)
    message = caught.value.message
    assert "flux-dev" in message and "black-forest-labs/FLUX.1-dev" in message
    assert "openfal models download flux-dev" in message


async def test_a_request_for_a_missing_model_fails_cleanly(make_settings: Any, tmp_path: Path) -> None:
    """Through the backend: a ModelUnavailable result (503), not a crash."""
    local = LocalBackend(make_settings(demo=False, models_dir=tmp_path / "empty"), options=TEST_OPTIONS)
    result, _ = await run_one(local, "fal-ai/flux-1/dev", {"prompt": "x"})
    await local.close()
    assert isinstance(result, ModelUnavailable) and result.status_code == 503


def test_a_repo_id_not_in_the_hf_cache_is_unavailable(make_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """model_paths may name a HF repo id; it is looked up in the local cache only."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    settings = make_settings(demo=False, model_paths={"flux-schnell": "black-forest-labs/FLUX.1-schnell"})
    with pytest.raises(ModelUnavailable, match="the Hugging Face cache has no copy of black-forest-labs/FLUX.1-schnell"):
        registry.model_folder("flux-schnell", settings)


async def test_model_paths_point_at_a_local_folder(make_settings: Any, models_dir: Path, tmp_path: Path) -> None:
    """A model folder given in model_paths is used outside demo mode."""
    folder = tiny_dir(models_dir) / "flux-schnell"
    settings = make_settings(demo=False, models_dir=tmp_path / "empty", model_paths={"flux-schnell": str(folder)})
    assert registry.model_folder("flux-schnell", settings) == folder
    local = LocalBackend(settings, options=TEST_OPTIONS)
    body = {"prompt": "x", "image_size": {"width": 32, "height": 32}, "num_inference_steps": 1}
    result, _ = await run_one(local, "fal-ai/flux-1/schnell", body)
    await local.close()
    assert len(output_of(result).payload["images"]) == 1


def test_every_endpoint_served_locally_has_its_models_listed() -> None:
    """The registry knows the models of every endpoint the catalog routes to local."""
    from openfal.endpoints.catalog import CATALOG

    local = {e for e, spec in CATALOG.items() if spec.backend == "local"}
    assert local == set(registry.ENDPOINT_MODELS)
    assert all(m in registry.MODELS for models in registry.ENDPOINT_MODELS.values() for m in models)


# -- install -----------------------------------------------------------------------------------------


def test_list_models_reports_install_state(make_settings: Any, models_dir: Path, tmp_path: Path) -> None:
    """Installed models show their folder and size; missing ones where they are looked for."""
    settings = make_settings(demo=False, models_dir=tmp_path / "m", model_paths={"flux-dev": str(tiny_dir(models_dir) / "flux-dev")})
    rows = {row.name: row for row in list_models(settings)}
    assert rows["flux-dev"].installed and rows["flux-dev"].size_bytes and rows["flux-dev"].size_bytes > 10_000
    assert "fal-ai/flux-1/dev/redux" in rows["flux-dev"].endpoints
    assert not rows["flux-schnell"].installed and rows["flux-schnell"].path == str(tmp_path / "m" / "flux-schnell")


def test_download_offline_is_a_clear_error(make_settings: Any, tmp_path: Path) -> None:
    """Offline (HF_HUB_OFFLINE), snapshot_download cannot fetch; the error says so and
    where to put the folder instead."""
    settings = make_settings(demo=False, models_dir=tmp_path / "m")
    with pytest.raises(DownloadFailed, match="not reachable") as caught:
        download_model("flux-schnell", settings)
    assert str(tmp_path / "m" / "flux-schnell") in str(caught.value)


def test_models_cli_lists_and_fails_downloads_cleanly(tmp_path: Path) -> None:
    """`models list --json` prints every model; `models download` exits 1 with the reason."""
    runner = CliRunner()
    listed = runner.invoke(models_cli, ["list", "--json"], obj={"data_dir": tmp_path})
    assert listed.exit_code == 0, listed.output
    assert {row["name"] for row in json.loads(listed.stdout)} == set(registry.MODELS)
    failed = runner.invoke(models_cli, ["download", "flux-schnell"], obj={"data_dir": tmp_path})
    assert failed.exit_code == 1 and "not reachable" in failed.output


# -- weight identity -------------------------------------------------------------------------------


def test_hf_cache_blobs_are_identified_by_their_name(tmp_path: Path) -> None:
    """A weight file symlinked into an HF cache ``blobs/<sha256>`` is identified by that
    name without reading it (here the content deliberately differs from the name)."""
    from openfal.backends.local.fingerprint import content_hash

    sha = "ab" * 32
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / sha).write_bytes(b"weights")
    link = tmp_path / "model.safetensors"
    link.symlink_to(tmp_path / "blobs" / sha)
    assert content_hash(link) == sha


def test_local_dir_downloads_use_the_recorded_hash_until_the_file_changes(tmp_path: Path) -> None:
    """snapshot_download(local_dir=...) records each file's sha256; it is trusted while
    the file is not newer than the record, and the file is hashed once it is."""
    import hashlib
    import os

    from openfal.backends.local.fingerprint import content_hash

    weights = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"vae weights")
    metadata = tmp_path / ".cache" / "huggingface" / "download" / "vae" / "diffusion_pytorch_model.safetensors.metadata"
    metadata.parent.mkdir(parents=True)
    recorded = "cd" * 32
    metadata.write_text(f"{'0' * 40}\n{recorded}\n{weights.stat().st_mtime + 5}\n")
    assert content_hash(weights) == recorded
    os.utime(weights, (weights.stat().st_atime, weights.stat().st_mtime + 60))
    assert content_hash(weights) == hashlib.sha256(b"vae weights").hexdigest()


def test_importing_the_backend_and_batch_keys_need_no_torch() -> None:
    """An API process computes batch keys at submit without importing torch or diffusers
    (they load when a job runs)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from openfal.backends.local import LocalBackend\n"
        "from openfal.config import Settings\n"
        "key = LocalBackend(Settings()).batch_key('fal-ai/flux-1/dev', {'prompt': 'x', 'image_size': 'square',"
        " 'num_inference_steps': 28, 'guidance_scale': 3.5})\n"
        "assert key is not None\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
