"""Which endpoints openfal knows, with their schemas, licence, list price and the backend
that serves them by default. The local endpoints come from the model families
(``backends/local/families``); this module adds the built-in utilities. Endpoints not listed here can still be served by a relay route; their input
then passes through unvalidated, as the upstream will validate it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from openfal.endpoints import utility
from openfal.endpoints.licences import Licence
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
    #: the licence of the weights behind it (None: no model, e.g. the utilities)
    licence: Licence | None = None
    #: the local model family that serves it (None: not a local endpoint)
    family: str | None = None
    #: fal's list price in dollars (per_request / per_image / per_megapixel / per_video_second)
    price: Mapping[str, float] = field(default_factory=dict)
    #: the local models it runs (empty: none)
    models: tuple[str, ...] = ()


def _local_specs() -> list[EndpointSpec]:
    """Every model family's endpoints (``backends/local/families``)."""
    from openfal.backends.local.families import FAMILIES
    from openfal.backends.local.registry import MODELS

    return [
        EndpointSpec(
            e.endpoint_id, e.title, e.input_model, e.output_model, "local", kind=e.media,
            licence=_strictest(MODELS[m].licence for m in e.models), family=family.name, price=e.price, models=e.models,
        )
        for family in FAMILIES.values()
        for e in family.endpoints
    ]  # fmt: skip


def _strictest(licences: Iterable[Licence]) -> Licence:
    """An endpoint that runs several models is as usable as the least usable of them."""
    ordered = sorted(licences, key=lambda licence: licence.commercial)
    return ordered[0]


_SPECS = [
    *_local_specs(),
    EndpointSpec("openfal/utils/echo", "No-op: returns its input", utility.EchoInput, utility.EchoOutput, "builtin", kind="json"),
    EndpointSpec("openfal/utils/sleep", "Sleeps in steps, with progress", utility.SleepInput, utility.SleepOutput, "builtin", kind="json"),
]

CATALOG: dict[str, EndpointSpec] = {spec.endpoint_id: spec for spec in _SPECS}


def validate_input(spec: EndpointSpec, body: Any) -> dict[str, Any]:
    """The input with defaults filled in, or ``InputInvalid`` in fal's 422 shape."""
    check_prompts(spec.endpoint_id, body)  # endpoints/limits.py
    return parse_body(spec.input_model, body).model_dump(mode="json", exclude_none=False)
