"""Which endpoints openfal knows, with their schemas and the backend that serves them
by default. Endpoints not listed here can still be served by a relay route; their input
then passes through unvalidated, as the upstream will validate it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from openfal.endpoints import flux, utility, video
from openfal.endpoints.limits import check_prompts
from openfal.validation import parse_body


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    endpoint_id: str
    title: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    #: the backend that serves it unless a route says otherwise
    backend: str
    #: what kind of media it produces (the playground's gallery uses it)
    kind: str = "image"


_SPECS = [
    EndpointSpec("fal-ai/flux-1/dev", "FLUX.1 [dev] text to image", flux.FluxDevInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/flux-1/dev/image-to-image", "FLUX.1 [dev] image to image", flux.FluxDevImageToImageInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/flux-1/dev/redux", "FLUX.1 [dev] Redux", flux.FluxDevReduxInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/flux-1/schnell", "FLUX.1 [schnell] text to image", flux.FluxSchnellInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/flux-1/schnell/redux", "FLUX.1 [schnell] Redux", flux.FluxSchnellReduxInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/flux-pro/kontext", "FLUX.1 Kontext [pro] (local: Kontext [dev])", flux.KontextInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/flux-pro/kontext/max", "FLUX.1 Kontext [max] (local: Kontext [dev])", flux.KontextInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/flux-pro/kontext/multi", "FLUX.1 Kontext [pro] multi-image", flux.KontextMultiInput, flux.KontextRegistryOutput, "local"),
    EndpointSpec("fal-ai/flux-pro/kontext/max/multi", "FLUX.1 Kontext [max] multi-image", flux.KontextMultiInput, flux.KontextRegistryOutput, "local"),
    EndpointSpec("fal-ai/flux-pro/kontext/text-to-image", "FLUX.1 Kontext [pro] text to image", flux.KontextTextToImageInput, flux.KontextRegistryOutput, "local"),
    EndpointSpec("fal-ai/flux-pro/kontext/max/text-to-image", "FLUX.1 Kontext [max] text to image", flux.KontextTextToImageInput, flux.KontextRegistryOutput, "local"),
    EndpointSpec("fal-ai/flux-lora", "FLUX.1 [dev] with LoRAs", flux.FluxLoraInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/flux-lora/image-to-image", "FLUX.1 [dev] image to image with LoRAs", flux.FluxLoraImageToImageInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/flux-kontext/dev", "FLUX.1 Kontext [dev]", flux.KontextDevInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/flux-kontext-lora", "FLUX.1 Kontext [dev] with LoRAs", flux.KontextLoraInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/flux/dev", "FLUX.1 [dev] text to image (classic id)", flux.ClassicFluxDevInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/flux/dev/image-to-image", "FLUX.1 [dev] image to image (classic id)", flux.ClassicFluxDevImageToImageInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/flux/schnell", "FLUX.1 [schnell] text to image (classic id)", flux.ClassicFluxSchnellInput, flux.FluxOutput, "local"),
    EndpointSpec("fal-ai/ltx-video", "LTX-Video text to video", video.LtxVideoInput, video.VideoOutput, "local", kind="video"),
    EndpointSpec("openfal/utils/echo", "No-op: returns its input", utility.EchoInput, utility.EchoOutput, "builtin", kind="json"),
    EndpointSpec("openfal/utils/sleep", "Sleeps in steps, with progress", utility.SleepInput, utility.SleepOutput, "builtin", kind="json"),
]

CATALOG: dict[str, EndpointSpec] = {spec.endpoint_id: spec for spec in _SPECS}


def validate_input(spec: EndpointSpec, body: Any) -> dict[str, Any]:
    """The input with defaults filled in, or ``InputInvalid`` in fal's 422 shape."""
    check_prompts(spec.endpoint_id, body)  # endpoints/limits.py
    return parse_body(spec.input_model, body).model_dump(mode="json", exclude_none=False)
