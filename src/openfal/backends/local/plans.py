"""What a FLUX request asks for, read from its input alone: which kind of run, which
model, size, steps and guidance. Free of torch and diffusers, so the API process can
compute batch keys at submit time without loading either."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from openfal.backends.local import sizes
from openfal.backends.local.options import LocalOptions

TEXT = "text"
IMAGE_TO_IMAGE = "image-to-image"
REDUX = "redux"
KONTEXT = "kontext"
KONTEXT_MULTI = "kontext-multi"
KONTEXT_TEXT = "kontext-text"

#: endpoint -> (kind, model whose transformer runs)
FLUX_ENDPOINTS: dict[str, tuple[str, str]] = {
    "fal-ai/flux-1/dev": (TEXT, "flux-dev"),
    "fal-ai/flux-1/schnell": (TEXT, "flux-schnell"),
    "fal-ai/flux-1/dev/image-to-image": (IMAGE_TO_IMAGE, "flux-dev"),
    "fal-ai/flux-1/dev/redux": (REDUX, "flux-dev"),
    "fal-ai/flux-1/schnell/redux": (REDUX, "flux-schnell"),
    "fal-ai/flux-lora": (TEXT, "flux-dev"),
    "fal-ai/flux-lora/image-to-image": (IMAGE_TO_IMAGE, "flux-dev"),
    "fal-ai/flux-kontext/dev": (KONTEXT, "flux-kontext-dev"),
    "fal-ai/flux-kontext-lora": (KONTEXT, "flux-kontext-dev"),
    "fal-ai/flux/dev": (TEXT, "flux-dev"),
    "fal-ai/flux/dev/image-to-image": (IMAGE_TO_IMAGE, "flux-dev"),
    "fal-ai/flux/schnell": (TEXT, "flux-schnell"),
    "fal-ai/flux-pro/kontext": (KONTEXT, "flux-kontext-dev"),
    "fal-ai/flux-pro/kontext/max": (KONTEXT, "flux-kontext-dev"),
    "fal-ai/flux-pro/kontext/multi": (KONTEXT_MULTI, "flux-kontext-dev"),
    "fal-ai/flux-pro/kontext/max/multi": (KONTEXT_MULTI, "flux-kontext-dev"),
    "fal-ai/flux-pro/kontext/text-to-image": (KONTEXT_TEXT, "flux-kontext-dev"),
    "fal-ai/flux-pro/kontext/max/text-to-image": (KONTEXT_TEXT, "flux-kontext-dev"),
}

#: models with LoRA endpoints (fal-ai/flux-lora*, fal-ai/flux-kontext-lora): compiled
#: engines reserve LoRA slots on them
LORA_MODELS = frozenset({"flux-dev", "flux-kontext-dev"})
REDUX_PRIOR = "flux-redux-dev"
PIPELINE_CLASS = {
    TEXT: "FluxPipeline",
    IMAGE_TO_IMAGE: "FluxImg2ImgPipeline",
    REDUX: "FluxPipeline",
    KONTEXT: "FluxKontextPipeline",
    KONTEXT_MULTI: "FluxKontextPipeline",
    KONTEXT_TEXT: "FluxKontextPipeline",
}
#: kinds whose requests can share a pipeline call (no per-request input image)
BATCHABLE = frozenset({TEXT, KONTEXT_TEXT})
#: the Redux base takes prompt embeddings from the prior: no text encoders needed
TEXT_ENCODERS = frozenset({"text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"})
#: T5 token budget: [schnell] is trained with 256, the others with 512
MAX_SEQUENCE_LENGTH = {"flux-schnell": 256}
REDUX_TEXT_TOKENS = 512


@dataclass(frozen=True, slots=True)
class FluxPlan:
    """The parameters one pipeline call shares, read from an input without fetching."""

    endpoint_id: str
    kind: str
    model: str
    steps: int
    guidance: float
    strength: float | None
    #: known up front (image_size / aspect_ratio); None: decided from the input image
    size: tuple[int, int] | None
    #: (path, scale) of each LoRA asked for: requests batch only with the same set
    loras: tuple[tuple[str, float], ...] = ()
    #: Kontext [dev]'s ``match_input``: the output keeps the input image's size
    match_input: bool = False

    @property
    def models(self) -> tuple[str, ...]:
        return (REDUX_PRIOR, self.model) if self.kind == REDUX else (self.model,)

    def batch_key(self) -> str | None:
        if self.kind not in BATCHABLE or self.size is None:
            return None
        return json.dumps([self.endpoint_id, *self.size, self.steps, self.guidance, *([list(self.loras)] if self.loras else [])])


def make_plan(endpoint_id: str, input: dict[str, Any], options: LocalOptions) -> FluxPlan:
    kind, model = FLUX_ENDPOINTS[endpoint_id]
    size: tuple[int, int] | None = None
    resolution = input.get("resolution_mode")
    if input.get("image_size") is not None:
        size = sizes.image_size(input["image_size"])
    elif input.get("aspect_ratio"):
        size = sizes.aspect_size(input["aspect_ratio"], options.kontext_area)
    elif resolution and ":" in resolution:
        size = sizes.aspect_size(resolution, options.kontext_area)
    # fal's Kontext [pro]/[max] have no step count (the server's); Kontext [dev]'s own endpoints do
    steps = int(input["num_inference_steps"]) if "num_inference_steps" in input else options.kontext_steps
    return FluxPlan(
        endpoint_id=endpoint_id,
        kind=kind,
        model=model,
        steps=steps,
        guidance=float(input.get("guidance_scale", 3.5)),
        strength=float(input["strength"]) if kind == IMAGE_TO_IMAGE else None,
        size=size,
        loras=tuple((str(item["path"]), float(item.get("scale", 1.0))) for item in input.get("loras") or []),
        match_input=resolution == "match_input",
    )


