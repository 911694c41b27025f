"""Which models exist, which endpoints need them, and where their weights are.

Weights are only ever read from local disk. For model ``NAME`` the folder is, in order:

1. ``settings.model_paths[NAME]``: a local folder, or a Hugging Face repo id that is
   looked up in the local HF cache only (``local_files_only=True``);
2. ``{models_dir}/NAME`` (where ``openfal models download NAME`` puts it).

In demo mode (``settings.demo``) every model is the tiny random-weight stand-in under
``{models_dir}/tiny/NAME``, built on first use. A model that is not installed is a
``ModelUnavailable`` naming the model and the command that installs it.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from openfal.backends.local import model_configs
from openfal.backends.local.families import all_endpoints, all_models
from openfal.backends.local.families.contract import Component, Model
from openfal.config import Settings
from openfal.endpoints.licences import APACHE_2
from openfal.errors import ModelUnavailable

#: the optional NSFW classifier every image family's results pass through
SAFETY_CHECKER = "safety-checker"


def _build_tiny_safety_checker(folder: Path) -> None:
    from openfal.backends.local.tiny import build_safety_checker

    build_safety_checker(folder)


SAFETY_MODEL = Model(
    SAFETY_CHECKER,
    "Falconsai/nsfw_image_detection",
    "NSFW image classifier (BFL's reference filter); optional",
    APACHE_2,
    "",
    {"classifier": Component("transformers.ViTForImageClassification", model_configs.VIT_BASE_NSFW, "ViTConfig")},
    _build_tiny_safety_checker,
)

#: every model the local backend knows: the families' and the safety checker
MODELS: dict[str, Model] = {**{m.name: m for m in all_models()}, SAFETY_CHECKER: SAFETY_MODEL}

#: the models each endpoint needs, in the order they run
ENDPOINT_MODELS: dict[str, tuple[str, ...]] = {e.endpoint_id: e.models for e in all_endpoints()}

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_tiny_lock = threading.Lock()


def endpoints_needing(name: str) -> list[str]:
    return [endpoint for endpoint, models in ENDPOINT_MODELS.items() if name in models]


def is_installed(folder: Path) -> bool:
    """A diffusers pipeline folder (``model_index.json``) or a transformers/diffusers
    model folder (``config.json``)."""
    return (folder / "model_index.json").is_file() or (folder / "config.json").is_file()


def configured_location(name: str, settings: Settings) -> str:
    """Where ``name`` is looked for (a folder or a repo id), without checking."""
    if name == SAFETY_CHECKER and settings.safety_checker_path:
        return settings.safety_checker_path
    if name in settings.model_paths:
        return settings.model_paths[name]
    return str(settings.effective_models_dir / name)


def find_model(name: str, settings: Settings, *, tiny: bool | None = None) -> Path | None:
    """The installed folder of ``name``, or None when it is not installed. ``tiny``
    (default: ``settings.demo``) selects the tiny stand-in, building it if needed."""
    if settings.demo if tiny is None else tiny:
        return _tiny_folder(name, settings)
    location = configured_location(name, settings)
    if _looks_like_repo_id(location):
        return _from_hf_cache(location)
    folder = Path(location).expanduser()
    return folder if is_installed(folder) else None


def model_folder(name: str, settings: Settings) -> Path:
    """The installed folder of ``name``, or ``ModelUnavailable`` saying how to install it."""
    if name not in MODELS:
        raise ModelUnavailable(f"Unknown model {name!r}")
    folder = find_model(name, settings)
    if folder is None:
        raise ModelUnavailable(_missing_message(name, settings))
    return folder


def _missing_message(name: str, settings: Settings) -> str:
    location = configured_location(name, settings)
    where = (
        f"the Hugging Face cache has no copy of {location}"
        if _looks_like_repo_id(location)
        else f"no model folder at {location}"
    )
    model = MODELS[name]
    gated = (
        f" {model.repo_id} is gated: accept its licence ({model.licence.name}, {model.licence.url}) on "
        f"https://huggingface.co/{model.repo_id} and log in (`hf auth login` or HF_TOKEN) first."
        if model.gated
        else ""
    )
    return (
        f"Model {name} ({model.repo_id}) is not installed on this server: {where}. "
        f"Install it with `openfal models download {name}`, or point OPENFAL_MODEL_PATHS "
        f"at a local copy; `openfal serve --demo` serves tiny random-weight stand-ins.{gated}"
    )


def _looks_like_repo_id(location: str) -> bool:
    return not Path(location).expanduser().exists() and bool(_REPO_ID.match(location))


def _from_hf_cache(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None
    return folder if is_installed(folder) else None


def _tiny_folder(name: str, settings: Settings) -> Path:
    from openfal.backends.local.tiny import build_tiny_models

    with _tiny_lock:
        return build_tiny_models(settings.effective_models_dir, (name,))[name]
