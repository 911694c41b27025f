"""Each endpoint states its weights' licence and whether commercial use is allowed, and
an operator can serve only commercially usable models with one setting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from openfal.backends.local import LocalBackend
from tests.support import App, make_settings, running_app


@asynccontextmanager
async def local_app(tmp_path: Path, **overrides: Any) -> AsyncIterator[App]:
    """An app whose router knows the local backend; no worker runs (only routing and
    submits are under test here, so no model loads)."""
    settings = make_settings(tmp_path, auth_enabled=False, in_process_workers=False, **overrides)
    async with running_app(settings, {"local": LocalBackend(settings)}) as app:
        yield app


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with local_app(tmp_path) as app:
        yield app


async def test_the_endpoint_list_states_each_licence(app: App) -> None:
    endpoints = {e["endpoint_id"]: e for e in (await app.client.get("/api/endpoints")).json()}
    assert endpoints["fal-ai/flux-1/schnell"]["licence"]["name"] == "apache-2.0"
    assert endpoints["fal-ai/flux-1/schnell"]["licence"]["commercial"] is True
    assert endpoints["fal-ai/flux-1/dev"]["licence"]["commercial"] is False
    assert endpoints["fal-ai/flux-1/dev"]["family"] == "flux1"


async def test_the_endpoint_openapi_carries_the_licence(app: App) -> None:
    doc = (await app.client.get("/openapi/queue/openapi.json", params={"endpoint_id": "fal-ai/flux/krea"})).json()
    assert doc["info"]["license"]["name"] == "flux-1-dev-non-commercial"
    assert doc["info"]["license"]["url"].startswith("https://")
    assert doc["info"]["x-openfal-licence"]["commercial"] is False


async def test_commercial_only_serves_apache_models_and_refuses_the_others_naming_their_licence(tmp_path: Path) -> None:
    async with local_app(tmp_path, commercial_only=True) as app:
        listed = {e["endpoint_id"] for e in (await app.client.get("/api/endpoints")).json()}
        assert "fal-ai/flux-1/schnell" in listed and "fal-ai/flux-1/dev" not in listed
        refused = await app.client.post("/fal-ai/flux-1/dev", json={"prompt": "a fox"})
        assert refused.status_code == 404
        assert "flux-1-dev-non-commercial" in refused.text and "commercial" in refused.text
        accepted = await app.client.post("/fal-ai/flux-1/schnell", json={"prompt": "a fox", "num_inference_steps": 1})
        assert accepted.status_code == 200, accepted.text


async def test_a_model_the_operator_holds_a_licence_for_is_served_under_commercial_only(tmp_path: Path) -> None:
    async with local_app(tmp_path, commercial_only=True, licensed_models=("flux-dev",)) as app:
        listed = {e["endpoint_id"] for e in (await app.client.get("/api/endpoints")).json()}
        assert "fal-ai/flux-1/dev" in listed
        assert "fal-ai/flux-1/dev/redux" not in listed  # it also runs the Redux prior, which is not licensed
        assert (await app.client.post("/fal-ai/flux-1/dev", json={"prompt": "a fox", "num_inference_steps": 1})).status_code == 200
