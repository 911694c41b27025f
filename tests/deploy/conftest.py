"""The deployment files as a cluster and Docker would read them: overlays rendered by
the real kubectl (its wheel from PyPI, Kustomize built in), YAML parsed as documents."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.support import ROOT

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SCHEMAS = DEPLOY / "schemas"
OVERLAYS = sorted(p.name for p in (KUBERNETES / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
#: the Kubernetes version the objects are validated against (kubernetes-validate's newest)
KUBERNETES_VERSION = "1.37.0"


def tool(name: str) -> str:
    """A command installed by the test extra into this interpreter's environment."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


@cache
def _rendered(overlay: str) -> str:
    out = subprocess.run([tool("kubectl"), "kustomize", str(KUBERNETES / "overlays" / overlay)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay's objects, as `kubectl apply` would get them (a fresh copy each call)."""
    return [doc for doc in yaml.safe_load_all(_rendered(overlay)) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def env_of(deployment: dict[str, Any], config: dict[str, str]) -> dict[str, str]:
    """A container's environment as the pod gets it: the ConfigMap, then its own ``env``."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {**config, **{e["name"]: e["value"] for e in container.get("env", []) if "value" in e}}


def config_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].startswith("openfal-config")]
    return dict(config["data"])


def pools_of(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    return json.loads(config_of(objects)["OPENFAL_POOLS"])
