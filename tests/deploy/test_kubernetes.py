"""deploy/kubernetes: every overlay renders with kubectl's Kustomize and every object
is valid for the Kubernetes API (kubernetes-validate's schemas) or, for KEDA's kinds,
for the CRD schemas kept in deploy/schemas; each worker pool is wired so that KEDA
scales it on its own queue and SIGTERM can drain it."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from openfal.pools import endpoints_of
from tests.deploy.conftest import KUBERNETES_VERSION, OVERLAYS, SCHEMAS, config_of, env_of, of_kind, pools_of, render

KEDA_KINDS = {"ScaledObject": "keda.sh_scaledobjects.yaml", "TriggerAuthentication": "keda.sh_triggerauthentications.yaml"}


def crd_schema(kind: str) -> dict[str, Any]:
    """The CRD's openAPIV3Schema, strict as `kubectl apply --validate=strict` is: a field
    the schema does not name is an error (the API server would drop it silently)."""
    crd = yaml.safe_load((SCHEMAS / KEDA_KINDS[kind]).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    return _closed(copy.deepcopy(version["schema"]["openAPIV3Schema"]))


def _closed(schema: Any) -> Any:
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        for value in schema.values():
            _closed(value)
    elif isinstance(schema, list):
        for value in schema:
            _closed(value)
    return schema


def validate_keda(obj: dict[str, Any]) -> None:
    jsonschema.validate(obj, crd_schema(obj["kind"]), cls=jsonschema.Draft7Validator)


def test_there_is_a_small_and_a_production_overlay() -> None:
    assert set(OVERLAYS) >= {"small", "production"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_the_overlay_is_valid_for_kubernetes(overlay: str) -> None:
    objects = render(overlay)
    assert objects
    for obj in objects:
        if obj["kind"] in KEDA_KINDS:
            validate_keda(obj)
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_an_invalid_object_is_refused() -> None:
    """The checks above can fail: a misspelt field in a Deployment and in a ScaledObject."""
    objects = render("small")
    deployment = of_kind(objects, "Deployment")[0]
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    scaled = of_kind(objects, "ScaledObject")[0]
    scaled["spec"]["minReplicas"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate_keda(scaled)


def test_small_runs_one_pool_with_postgresql_and_minio_inside_the_cluster() -> None:
    objects = render("small")
    assert list(pools_of(objects)) == ["flux"]
    assert {o["metadata"]["name"] for o in of_kind(objects, "StatefulSet")} == {"openfal-postgres"}
    assert "openfal-minio" in {o["metadata"]["name"] for o in of_kind(objects, "Deployment")}
    secret = of_kind(objects, "Secret")[0]
    assert {"OPENFAL_DATABASE_URL", "KEDA_POSTGRESQL_CONNECTION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["data"])


def test_production_runs_two_pools_against_outside_postgresql_and_s3() -> None:
    objects = render("production")
    assert set(pools_of(objects)) == {"flux", "video"}
    assert not of_kind(objects, "StatefulSet") and not of_kind(objects, "Secret")  # the operator's Secret, outside
    assert "OPENFAL_S3_ENDPOINT_URL" not in config_of(objects)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_base_runs_the_api_behind_a_service_with_an_hpa_a_pdb_and_a_migrate_job(overlay: str) -> None:
    objects = render(overlay)
    api = next(o for o in of_kind(objects, "Deployment") if o["metadata"]["name"] == "openfal-api")
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["serve", "--no-workers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("Service", "openfal-api"), ("HorizontalPodAutoscaler", "openfal-api"), ("PodDisruptionBudget", "openfal-api"), ("Job", "openfal-migrate")} <= names
    hpa = next(o for o in of_kind(objects, "HorizontalPodAutoscaler"))
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_pool_is_a_gpu_deployment_serving_its_pools_models_scaled_by_keda_on_its_own_queue(overlay: str) -> None:
    objects = render(overlay)
    pools, config = pools_of(objects), config_of(objects)
    workers = [o for o in of_kind(objects, "Deployment") if "openfal.dev/pool" in o["metadata"].get("labels", {})]
    scaled = {o["spec"]["scaleTargetRef"]["name"]: o for o in of_kind(objects, "ScaledObject")}
    assert {w["metadata"]["labels"]["openfal.dev/pool"] for w in workers} == set(pools)
    for worker in workers:
        pool, name = worker["metadata"]["labels"]["openfal.dev/pool"], worker["metadata"]["name"]
        spec = worker["spec"]["template"]["spec"]
        env = env_of(worker, config)
        # serves exactly what the pool's queue counts
        assert env["OPENFAL_WORKER_MODELS"].split(",") == pools[pool], name
        assert endpoints_of(pools[pool])
        container = spec["containers"][0]
        assert container["args"][0] == "worker"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
        # SIGTERM drains: the grace period outlasts the drain, which outlasts the longest run
        drain, longest = float(env["OPENFAL_DRAIN_SECONDS"]), float(env["OPENFAL_MAX_RUN_SECONDS"])
        assert spec["terminationGracePeriodSeconds"] > drain >= longest, name
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert "replicas" not in worker["spec"]  # KEDA's to set
        # KEDA: this pool's row of the view, from zero, activated by any request, slow to let go
        keda = scaled[name]["spec"]
        (trigger,) = keda["triggers"]
        assert trigger["type"] == "postgresql" and f"WHERE pool = '{pool}'" in trigger["metadata"]["query"]
        assert "openfal_pool_queue" in trigger["metadata"]["query"]
        assert trigger["authenticationRef"]["name"] == "openfal-postgres"
        assert keda["minReplicaCount"] in (0, 1) and float(trigger["metadata"]["activationTargetQueryValue"]) == 0
        assert keda["cooldownPeriod"] >= 600  # longer than a model load and warm-up
