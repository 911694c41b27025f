"""``openfal models download`` fetches only the files a pipeline's model_index.json
names: its component folders, not the root-level single-file checkpoint (which would
double the download) nor any other folder of the repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from openfal.backends.local import install

#: black-forest-labs/FLUX.1-dev model_index.json
FLUX_DEV_INDEX = {
    "_class_name": "FluxPipeline", "_diffusers_version": "0.30.0.dev0",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "FluxTransformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}  # fmt: skip


def test_the_patterns_are_the_index_and_its_component_folders() -> None:
    assert install.pipeline_patterns(FLUX_DEV_INDEX) == [
        "model_index.json", "scheduler/*", "text_encoder/*", "text_encoder_2/*", "tokenizer/*", "tokenizer_2/*",
        "transformer/*", "vae/*",
    ]  # fmt: skip


def test_a_component_set_to_null_names_no_folder() -> None:
    index = {**FLUX_DEV_INDEX, "text_encoder": [None, None], "feature_extractor": [None, None]}
    assert "text_encoder/*" not in install.pipeline_patterns(index)


def test_download_reads_the_index_first_and_fetches_only_its_components(
    make_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Hugging Face Hub cannot be reached from the tests: its two download functions
    are replaced by ones that record what they were asked for."""
    import huggingface_hub

    asked: dict[str, Any] = {}

    def hf_hub_download(repo_id: str, filename: str, *, local_dir: Path, token: str | None = None) -> str:
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(FLUX_DEV_INDEX))
        asked["index"] = (repo_id, filename)
        return str(path)

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        asked["snapshot"] = kwargs
        return str(kwargs["local_dir"])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    install.download_model("flux-dev", make_settings(demo=False))
    assert asked["index"] == ("black-forest-labs/FLUX.1-dev", "model_index.json")
    assert asked["snapshot"]["allow_patterns"] == install.pipeline_patterns(FLUX_DEV_INDEX)
    assert "*/*" not in asked["snapshot"]["allow_patterns"]
