"""Installing model weights: what is installed where, and downloading what is not.

Downloads are the only network access the local backend ever makes, and only when an
operator runs ``openfal models download NAME``. They go to ``{models_dir}/NAME`` in
the diffusers layout (the single-file checkpoints some repositories also carry at
their root are skipped: they duplicate the diffusers folders).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from openfal.backends.local import registry
from openfal.config import Settings
from openfal.errors import OpenfalError

#: a pipeline's index, read first: its components name the folders to fetch (the
#: root-level single-file checkpoints and any other folder of the repo are skipped)
MODEL_INDEX = "model_index.json"
FLAT_FILES = ["*.json", "*.safetensors", "*.txt"]
SKIPPED = ["*.bin", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "*.ot", "*.gguf"]


class DownloadFailed(OpenfalError):
    """The model could not be downloaded."""


@dataclass(frozen=True, slots=True)
class ModelRow:
    name: str
    repo_id: str
    installed: bool
    #: the folder in use, or where it is looked for when not installed
    path: str
    size_bytes: int | None
    endpoints: list[str]
    description: str
    #: the weights' licence, and whether it allows commercial use
    licence: str
    commercial: bool


def list_models(settings: Settings) -> list[ModelRow]:
    """Every known model with its install state (real weights; never the tiny set)."""
    rows = []
    for name, info in registry.MODELS.items():
        folder = registry.find_model(name, settings, tiny=False)
        rows.append(
            ModelRow(
                name=name,
                repo_id=info.repo_id,
                installed=folder is not None,
                path=str(folder) if folder else registry.configured_location(name, settings),
                size_bytes=folder_size(folder) if folder else None,
                endpoints=registry.endpoints_needing(name),
                description=info.description,
                licence=info.licence.name,
                commercial=info.licence.commercial,
            )
        )
    return rows


def download_model(name: str, settings: Settings, *, token: str | None = None) -> Path:
    """Download ``name`` into ``{models_dir}/NAME`` with a progress bar; the folder."""
    if name not in registry.MODELS:
        raise DownloadFailed(f"Unknown model {name!r}; known: {', '.join(registry.MODELS)}")
    info = registry.MODELS[name]
    target = settings.effective_models_dir / name
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    from huggingface_hub.utils import enable_progress_bars

    enable_progress_bars()
    pipeline = name != registry.SAFETY_CHECKER
    try:
        patterns = FLAT_FILES
        if pipeline:
            from huggingface_hub import hf_hub_download

            index = Path(hf_hub_download(info.repo_id, MODEL_INDEX, local_dir=target, token=token))
            patterns = pipeline_patterns(json.loads(index.read_text()))
        folder = snapshot_download(
            info.repo_id,
            local_dir=target,
            allow_patterns=patterns,
            ignore_patterns=SKIPPED,
            token=token,
        )
    except GatedRepoError:
        raise DownloadFailed(
            f"{info.repo_id} is gated: accept its licence ({info.licence.name}, {info.licence.url}) on "
            f"https://huggingface.co/{info.repo_id} and log in (`hf auth login`, or set HF_TOKEN) before downloading"
        ) from None
    except RepositoryNotFoundError:
        raise DownloadFailed(f"{info.repo_id} was not found on the Hugging Face Hub (or needs a token)") from None
    except LocalEntryNotFoundError:
        raise DownloadFailed(
            f"Cannot download {info.repo_id}: the Hugging Face Hub is not reachable (offline, or HF_HUB_OFFLINE "
            f"is set); copy the model folder to {target} instead"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise DownloadFailed(f"Downloading {info.repo_id} failed: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # httpx/requests connection errors differ across huggingface_hub versions
        raise DownloadFailed(f"Downloading {info.repo_id} failed: {type(exc).__name__}: {exc}") from None
    return Path(folder)


def pipeline_patterns(model_index: dict[str, object]) -> list[str]:
    """The files of a diffusers pipeline: its index and the folder of each component it
    names (``"transformer": ["diffusers", "FluxTransformer2DModel"]``); components set
    to ``[null, null]`` and ``_``-prefixed keys name no folder."""
    folders = sorted(
        key
        for key, value in model_index.items()
        if not key.startswith("_") and isinstance(value, list) and len(value) == 2 and value[0] is not None
    )
    return [MODEL_INDEX, *(f"{folder}/*" for folder in folders)]


def folder_size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (symlinks into the HF cache followed)."""
    total = 0
    for path in folder.rglob("*"):
        if ".cache" in path.parts:
            continue
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total
