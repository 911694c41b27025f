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
from dataclasses import dataclass
from pathlib import Path

from openfal.config import Settings
from openfal.errors import ModelUnavailable


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    #: the Hugging Face repository ``openfal models download`` fetches
    repo_id: str
    description: str
    #: whether the license needs accepting on huggingface.co before downloading
    gated: bool = False


MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        ModelInfo("flux-dev", "black-forest-labs/FLUX.1-dev", "FLUX.1 [dev] (text-to-image, image-to-image, Redux base)", gated=True),
        ModelInfo("flux-schnell", "black-forest-labs/FLUX.1-schnell", "FLUX.1 [schnell] (text-to-image, Redux base)"),
        ModelInfo(
            "flux-kontext-dev",
            "black-forest-labs/FLUX.1-Kontext-dev",
            "FLUX.1 Kontext [dev], the open stand-in for Kontext [pro] and [max]",
            gated=True,
        ),
        ModelInfo("flux-redux-dev", "black-forest-labs/FLUX.1-Redux-dev", "FLUX.1 Redux [dev] image prior", gated=True),
        ModelInfo("ltx-video", "Lightricks/LTX-Video", "LTX-Video text-to-video"),
        ModelInfo(
            "safety-checker",
            "Falconsai/nsfw_image_detection",
            "NSFW image classifier (BFL's reference filter); optional",
        ),
    ]
}

SAFETY_CHECKER = "safety-checker"

_KONTEXT = ("flux-kontext-dev",)

#: the models each endpoint needs, in the order they run
ENDPOINT_MODELS: dict[str, tuple[str, ...]] = {
    "fal-ai/flux-1/dev": ("flux-dev",),
    "fal-ai/flux-1/dev/image-to-image": ("flux-dev",),
    "fal-ai/flux-1/dev/redux": ("flux-redux-dev", "flux-dev"),
    "fal-ai/flux-1/schnell": ("flux-schnell",),
    "fal-ai/flux-1/schnell/redux": ("flux-redux-dev", "flux-schnell"),
    "fal-ai/flux/dev": ("flux-dev",),
    "fal-ai/flux/dev/image-to-image": ("flux-dev",),
    "fal-ai/flux/schnell": ("flux-schnell",),
    "fal-ai/flux-lora": ("flux-dev",),
    "fal-ai/flux-lora/image-to-image": ("flux-dev",),
    "fal-ai/flux-kontext/dev": _KONTEXT,
    "fal-ai/flux-kontext-lora": _KONTEXT,
    "fal-ai/flux-pro/kontext": _KONTEXT,
    "fal-ai/flux-pro/kontext/max": _KONTEXT,
    "fal-ai/flux-pro/kontext/multi": _KONTEXT,
    "fal-ai/flux-pro/kontext/max/multi": _KONTEXT,
    "fal-ai/flux-pro/kontext/text-to-image": _KONTEXT,
    "fal-ai/flux-pro/kontext/max/text-to-image": _KONTEXT,
    "fal-ai/ltx-video": ("ltx-video",),
}

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
    return (
        f"Model {name} ({MODELS[name].repo_id}) is not installed on this server: {where}. "
        f"Install it with `openfal models download {name}`, or point OPENFAL_MODEL_PATHS "
        f"at a local copy; `openfal serve --demo` serves tiny random-weight stand-ins."
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
