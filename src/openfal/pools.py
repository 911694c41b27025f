"""Worker pools: the endpoints a worker serves, from the names an operator gives it.

A pool of GPU workers (one Kubernetes Deployment, scaled by KEDA on its own queue)
serves some model families; its workers claim only those families' requests, so a
burst of video requests starts video workers and leaves the FLUX pool as it is. A
name given to ``openfal worker --models`` / ``OPENFAL_WORKER_MODELS`` (and in
``OPENFAL_POOLS``) is one of:

- a model family: ``flux1`` (FLUX.1 with Kontext, Redux and LoRA), ``ltx``;
- a model: ``flux-dev``, ``flux-kontext-dev``, ``ltx-video`` (the endpoints needing it);
- an endpoint id: ``fal-ai/flux-1/schnell``.

This is the one place names become endpoint ids, from the local backend's family table
(``backends/local/families``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from openfal.backends.local.families import FAMILIES, all_endpoints
from openfal.endpoints.catalog import CATALOG


class UnknownPoolName(ValueError):
    """A name that is no family, model or endpoint id (a typo would otherwise make a
    worker that claims nothing, forever)."""


def families() -> dict[str, frozenset[str]]:
    """Family name -> its endpoint ids."""
    return {name: frozenset(family.endpoint_ids) for name, family in FAMILIES.items()}


def _models() -> dict[str, frozenset[str]]:
    """Model name -> the endpoints that need it."""
    needs: dict[str, set[str]] = {}
    for endpoint in all_endpoints():
        for model in endpoint.models:
            needs.setdefault(model, set()).add(endpoint.endpoint_id)
    return {model: frozenset(endpoints) for model, endpoints in needs.items()}


def endpoints_of(names: Iterable[str]) -> frozenset[str]:
    """The endpoint ids the names stand for (UnknownPoolName for one that stands for none)."""
    by_family, by_model = families(), _models()
    endpoints: set[str] = set()
    for name in names:
        if name in by_family:
            endpoints |= by_family[name]
        elif name in by_model:
            endpoints |= by_model[name]
        elif name in CATALOG:
            endpoints.add(name)
        else:
            raise UnknownPoolName(
                f"{name!r} is no model family ({', '.join(sorted(by_family))}), model ({', '.join(sorted(by_model))}) or endpoint id"
            )
    return frozenset(endpoints)


def pool_endpoints(pools: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """``OPENFAL_POOLS`` resolved: pool name -> its endpoint ids."""
    return {pool: endpoints_of(names) for pool, names in pools.items()}
