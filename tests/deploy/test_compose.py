"""compose.yaml: valid for the Compose Specification's JSON schema (kept in
deploy/schemas), and the one-box layout the README promises: PostgreSQL, MinIO, a
one-shot migrate that makes the admin key, scalable API processes and a GPU worker."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import SCHEMAS
from tests.support import ROOT


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def validate(document: dict[str, Any]) -> None:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    jsonschema.validate(document, schema, cls=jsonschema.Draft7Validator)


def test_compose_yaml_is_valid_for_the_compose_specification() -> None:
    validate(compose())


def test_a_compose_file_with_an_unknown_service_key_is_refused() -> None:
    document = compose()
    document["services"]["worker"]["gpu"] = "all"
    with pytest.raises(jsonschema.ValidationError):
        validate(document)


def test_the_box_runs_postgres_minio_a_one_shot_migrate_api_and_a_gpu_worker() -> None:
    services = compose()["services"]
    assert {"postgres", "minio", "minio-setup", "migrate", "api", "worker"} <= set(services)
    assert services["migrate"]["restart"] == "no" and "openfal migrate" in services["migrate"]["command"][0]
    assert "keys create" in services["migrate"]["command"][0]  # the first admin key
    assert services["api"]["command"][:2] == ["serve", "--no-workers"]
    assert all(services[s]["depends_on"]["migrate"]["condition"] == "service_completed_successfully" for s in ("api", "worker"))


def test_the_worker_reserves_every_gpu_and_stops_after_its_drain() -> None:
    worker = compose()["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert (device["driver"], device["count"], device["capabilities"]) == ("nvidia", "all", ["gpu"])
    assert worker["command"][0] == "worker"
    drain = float(worker["environment"]["OPENFAL_DRAIN_SECONDS"])
    assert float(worker["stop_grace_period"].rstrip("s")) > drain


def test_every_volume_is_named() -> None:
    document = compose()
    mounted = {m.split(":")[0] for s in document["services"].values() for m in s.get("volumes", [])}
    assert mounted <= set(document["volumes"])
