"""The model families the local backend serves: one file each, one line each here.

Like diffusers' ``AUTO_*_PIPELINES_MAPPING``, this mapping is the only place that lists
them; everything else (registry, catalog, prices, memory plans, tiny set, warm-up, the
backend's dispatch) is derived from it. Adding a family: write ``families/NAME.py``
(see ``contract.py`` and ``flux2.py`` as the worked example), put its fal schemas in
``openfal/endpoints/``, add one line below, and test it (README: "Adding a model family").
"""

from __future__ import annotations

from openfal.backends.local.families import flux1, flux2, ltx, qwen_image, wan, z_image
from openfal.backends.local.families.contract import Component, Endpoint, Family, Model

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        flux1.FAMILY,
        flux2.FAMILY,
        ltx.FAMILY,
        qwen_image.FAMILY,
        z_image.FAMILY,
        wan.FAMILY,
    )
}

#: endpoint id -> the family that serves it
BY_ENDPOINT: dict[str, Family] = {e.endpoint_id: f for f in FAMILIES.values() for e in f.endpoints}
#: model name -> (family, model)
BY_MODEL: dict[str, tuple[Family, Model]] = {m.name: (f, m) for f in FAMILIES.values() for m in f.models}


def family_of(endpoint_id: str) -> Family | None:
    return BY_ENDPOINT.get(endpoint_id)


def endpoint(endpoint_id: str) -> Endpoint:
    return BY_ENDPOINT[endpoint_id].endpoint(endpoint_id)


def model(name: str) -> Model:
    return BY_MODEL[name][1]


def family_of_model(name: str) -> Family:
    return BY_MODEL[name][0]


def all_endpoints() -> list[Endpoint]:
    return [e for f in FAMILIES.values() for e in f.endpoints]


def all_models() -> list[Model]:
    return [m for f in FAMILIES.values() for m in f.models]


__all__ = ["FAMILIES", "Component", "Endpoint", "Family", "Model", "all_endpoints", "all_models", "endpoint", "family_of", "model"]
