"""Worker pools: the endpoints a worker serves, from the names an operator gives it.

A pool of GPU workers (one Kubernetes Deployment, scaled by KEDA on its own queue)
serves some model families; its workers claim only those families' requests, so a
burst of video requests starts video workers and leaves the FLUX pool as it is. A
name given to ``openfal worker --models`` / ``OPENFAL_WORKER_MODELS`` (and in
``OPENFAL_POOLS``) is one of:

- a model family: ``flux1`` (FLUX.1 with Kontext, Redux and LoRA), ``ltx``;
- a model: ``flux-dev``, ``flux-kontext-dev``, ``ltx-video`` (the endpoints needing it);
- an endpoint id: ``fal-ai/flux-1/schnell``.

This is the one place names become endpoint ids: the families come from the local
backend's family table once it has one (``backends/local/families``), until then from
the model registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from openfal.backends.local.registry import ENDPOINT_MODELS, MODELS
from openfal.endpoints.catalog import CATALOG


class UnknownPoolName(ValueError):
    """A name that is no family, model or endpoint id (a typo would otherwise make a
    worker that claims nothing, forever)."""


#: until ``backends/local/families`` exists: family -> the models it is made of
_FAMILY_MODELS: dict[str, tuple[str, ...]] = {
    "flux1": ("flux-dev", "flux-schnell", "flux-kontext-dev", "flux-redux-dev"),
    "ltx": ("ltx-video",),
}


def families() -> dict[str, frozenset[str]]:
    """Family name -> its endpoint ids."""
    try:
        from openfal.backends.local.families import FAMILIES  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name != "openfal.backends.local.families":
            raise
        return {
            family: frozenset(e for e, needs in ENDPOINT_MODELS.items() if set(needs) & set(models))
            for family, models in _FAMILY_MODELS.items()
        }
    return {name: frozenset(family.endpoint_ids) for name, family in FAMILIES.items()}


def _models() -> dict[str, frozenset[str]]:
    """Model name -> the endpoints that need it."""
    return {name: frozenset(e for e, needs in ENDPOINT_MODELS.items() if name in needs) for name in MODELS}


def endpoints_of(names: Iterable[str]) -> frozenset[str]:
    """The endpoint ids the names stand for (UnknownPoolName for one that stands for none)."""
    by_family, by_model = families(), _models()
    endpoints: set[str] = set()
    for name in names:
        if name in by_family:
            endpoints |= by_family[name]
        elif by_model.get(name):
            endpoints |= by_model[name]
        elif name in CATALOG:
            endpoints.add(name)
        else:
            known = ", ".join(sorted(by_family))
            raise UnknownPoolName(f"{name!r} is no model family ({known}), model ({', '.join(sorted(n for n, e in by_model.items() if e))}) or endpoint id")
    return frozenset(endpoints)


def pool_endpoints(pools: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """``OPENFAL_POOLS`` resolved: pool name -> its endpoint ids."""
    return {pool: endpoints_of(names) for pool, names in pools.items()}
