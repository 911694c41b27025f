"""The model-family mapping is the one list of local models and endpoints: everything
else (registry, catalog, prices, tiny set, memory plans) is derived from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from openfal.accounting import Price, PriceList
from openfal.backends.local import LocalBackend, memory_plan, registry
from openfal.backends.local.families import FAMILIES, all_endpoints, all_models, family_of
from openfal.backends.local.families.images import ImageFamily
from openfal.backends.local.families.videos import VideoFamily
from openfal.endpoints.catalog import CATALOG
from openfal.endpoints.licences import APACHE_2, FLUX_1_DEV_NON_COMMERCIAL
from tests.local.helpers import output_of, pixels, run_one


def test_each_endpoint_belongs_to_exactly_one_family() -> None:
    ids = [e.endpoint_id for e in all_endpoints()]
    assert len(ids) == len(set(ids))
    for family in FAMILIES.values():
        for endpoint_id in family.endpoint_ids:
            assert family_of(endpoint_id) is family


def test_every_family_endpoint_is_in_the_catalog_with_its_licence_family_and_price() -> None:
    """The price list charges what the family declares (fal's list price; an endpoint
    whose price fal does not publish declares none and is free until OPENFAL_PRICES
    sets one)."""
    prices = PriceList()
    for family in FAMILIES.values():
        for endpoint in family.endpoints:
            spec = CATALOG[endpoint.endpoint_id]
            assert (spec.backend, spec.family, spec.input_model) == ("local", family.name, endpoint.input_model)
            assert spec.licence is not None
            assert prices.price(endpoint.endpoint_id) == Price(**endpoint.price), endpoint.endpoint_id


def test_every_model_a_family_names_is_registered_planned_and_has_a_tiny_build() -> None:
    for model in all_models():
        assert registry.MODELS[model.name] is model
        assert model.name in memory_plan.PLANNED
        assert callable(model.build_tiny) and model.components
    for endpoint in all_endpoints():
        assert set(endpoint.models) <= set(registry.MODELS)
        assert registry.ENDPOINT_MODELS[endpoint.endpoint_id] == endpoint.models


def test_families_produce_the_media_their_endpoints_declare() -> None:
    for family in FAMILIES.values():
        media = {"image"} if isinstance(family, ImageFamily) else {"video"} if isinstance(family, VideoFamily) else set()
        assert {e.media for e in family.endpoints} == media, family.name


def test_an_endpoint_is_as_usable_as_the_least_usable_model_behind_it() -> None:
    """[schnell] is Apache-2.0, but its Redux endpoint also runs the Redux [dev] prior."""
    assert CATALOG["fal-ai/flux-1/schnell"].licence == APACHE_2
    assert CATALOG["fal-ai/flux-1/schnell/redux"].licence == FLUX_1_DEV_NON_COMMERCIAL
    assert CATALOG["fal-ai/flux/krea"].licence == FLUX_1_DEV_NON_COMMERCIAL


async def test_krea_runs_its_own_weights_not_dev(backend: LocalBackend, models_dir: Path) -> None:
    """Krea [dev] shares FLUX.1 [dev]'s architecture and pipelines but is its own folder:
    the same seed and prompt give another image."""
    body = {"prompt": "a fox", "image_size": {"width": 64, "height": 48}, "num_inference_steps": 2, "seed": 3}
    (dev,) = output_of((await run_one(backend, "fal-ai/flux-1/dev", body))[0]).payload["images"]
    (krea,) = output_of((await run_one(backend, "fal-ai/flux/krea", body))[0]).payload["images"]
    assert np.abs(np.asarray(pixels(dev), dtype=float) - np.asarray(pixels(krea), dtype=float)).mean() > 1.0
