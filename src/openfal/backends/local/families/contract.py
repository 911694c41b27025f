"""What a model family declares: its models, its endpoints, and how a request runs.

A family is one file under ``families/`` (diffusers keeps one pipeline per file plus one
mapping; openfal does the same). Everything else in the local backend reads the family
instead of naming a model: the registry and ``openfal models download`` read ``models``,
the catalog and the price list read ``endpoints``, memory plans read each model's
``components`` (the real configs, built on the ``meta`` device), the tiny set calls
``build_tiny``, warm-up calls ``warm_up``, and the backend hands a claimed batch to the
family's runner (``images.run_images`` or ``videos.run_video``).

Nothing here imports torch or diffusers: the API process reads families to validate,
price and batch requests without loading either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from openfal.endpoints.licences import Licence

if TYPE_CHECKING:
    from openfal.backends.local.options import LocalOptions


@dataclass(frozen=True, slots=True)
class Component:
    """One component of a real model, as its public ``config.json`` says.

    ``cls`` is ``"diffusers.ClassName"``, ``"transformers.ClassName"`` or a dotted path;
    a transformers model is built from ``config_cls(**config)``.
    """

    cls: str
    config: Mapping[str, Any]
    config_cls: str | None = None


@dataclass(frozen=True, slots=True)
class Model:
    """One set of weights (one Hugging Face repository) a family runs."""

    name: str
    #: the Hugging Face repository ``openfal models download`` fetches
    repo_id: str
    description: str
    licence: Licence
    #: the pipeline class warm-up loads the folder as
    pipeline: str
    #: component name -> its real architecture (memory plans; nothing downloaded)
    components: Mapping[str, Component]
    #: writes the tiny random-weight stand-in (diffusers layout) into a folder
    build_tiny: Callable[[Path], None]
    #: whether the license needs accepting on huggingface.co before downloading
    gated: bool = False
    #: serves LoRA endpoints (compiled engines reserve LoRA slots on its transformer)
    loras: bool = False
    #: transformer activation bytes for (width, height, images) at the largest call (a
    #: video model: (width, height, frames)); None: the model has no transformer (an image prior)
    activation_bytes: Callable[[int, int, int], int] | None = None
    #: the VAE decode's peak bytes for (width, height, images or frames); None: the image
    #: VAE estimate of ``memory_plan`` (per image)
    vae_decode_bytes: Callable[[int, int, int], int] | None = None
    #: (width, height, frames) of the largest call a video model's plan is sized for;
    #: None: the warm-up sizes at ``max_batch_images`` images
    largest_call: tuple[int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One fal endpoint a family serves."""

    endpoint_id: str
    title: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    #: the family's name for how this endpoint runs (text, image-to-image, edit, ...)
    kind: str
    #: the models it needs, in the order they run (the last is the one that denoises)
    models: tuple[str, ...]
    #: fal's list price: per_request / per_image / per_megapixel / per_video_second (dollars)
    price: Mapping[str, float] = field(default_factory=dict)
    #: what it produces (the playground's gallery and the OpenAI API read it)
    media: str = "image"

    @property
    def model(self) -> str:
        return self.models[-1]


#: fal rewrites a prompt with an LLM when asked; no prompt model runs here, and a request
#: must never be silently different: every family that takes the field says so in its logs
PROMPT_EXPANSION_NOT_APPLIED = (
    "enable_prompt_expansion was not applied: no prompt-expansion model is installed on this server; the prompt is used as given"
)


def prompt_expansion_notes(input: Mapping[str, Any]) -> list[str]:
    """The log line for ``enable_prompt_expansion`` when a request asks for it."""
    return [PROMPT_EXPANSION_NOT_APPLIED] if input.get("enable_prompt_expansion") else []


class SubmitChecks(Protocol):
    """The backend's limits a family applies at submit (``LocalBackend.admit``)."""

    def pixels(self, width: int, height: int, images: int) -> None:
        """422 past the operator's pixel cap."""

    def loras(self, paths: Sequence[str]) -> None:
        """422 for LoRA paths that can never be read (pickles)."""


class Family:
    """The base every family file instantiates once. Subclasses (``images.ImageFamily``,
    ``videos.VideoFamily``) add how a request runs."""

    #: the name operators use (``--models flux2``) and the mapping's key
    name: str = ""
    models: tuple[Model, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    #: the transformer's repeated blocks (regional compile compiles one of each; group
    #: offload streams one at a time)
    compile_blocks: tuple[str, ...] = ()
    #: module-name suffixes of the Linear layers a LoRA of this family may target
    lora_targets: tuple[str, ...] = ()
    #: whether the engine's acceleration profile (fusion, fp8, compile) applies
    accelerated: bool = False

    @property
    def endpoint_ids(self) -> tuple[str, ...]:
        return tuple(e.endpoint_id for e in self.endpoints)

    def endpoint(self, endpoint_id: str) -> Endpoint:
        return next(e for e in self.endpoints if e.endpoint_id == endpoint_id)

    def model(self, name: str) -> Model:
        return next(m for m in self.models if m.name == name)

    def plan(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions) -> Any:
        """What a request asks for, read from its input alone (no fetch, no torch)."""
        raise NotImplementedError

    def batch_key(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions) -> str | None:
        """Requests with equal keys may share one pipeline call; None: it runs alone."""
        return None

    def admit(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions, check: SubmitChecks) -> None:
        """Refuse at submit what the run would refuse (``check`` is the backend's limits)."""

    async def run(self, backend: Any, jobs: list[Any]) -> list[Any]:
        raise NotImplementedError

    def warm_up(self, pipe: Any, width: int, height: int, images: int, model: str) -> None:
        """One call that compiles the graphs a request of this shape runs."""

    def own_components(self, model: str, folder: Path) -> dict[str, Any]:
        """Components of ``model``'s pipeline the family loads itself from ``folder``
        (the model cache passes them to ``from_pretrained`` in place of the declared
        class): a tokenizer whose processor class needs a package the pipeline's call
        does not (FLUX.2 [dev]'s PixtralProcessor). Default: none."""
        return {}
