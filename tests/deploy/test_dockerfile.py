"""The Dockerfile, as far as it can be checked without a Docker daemon (none in CI):
hadolint's rules, and the promises the README makes of the image. Its install step,
deploy/install.sh, is run for real by deploy/check-install.sh (.ci/run)."""

from __future__ import annotations

import re
import subprocess

from tests.deploy.conftest import tool
from tests.support import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.split(None, 1)[:1] == [name]]


def test_hadolint_finds_nothing() -> None:
    out = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_bases_are_pinned_by_version_with_a_cpu_variant() -> None:
    args = dict(a.split("=", 1) for a in instructions("ARG") if "=" in a)
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-runtime-ubuntu\d+\.\d+", args["CUDA_IMAGE"])
    assert re.fullmatch(r"ubuntu:\d+\.\d+", args["CPU_IMAGE"])
    assert args["VARIANT"] == "gpu"
    assert "base-${VARIANT} AS base" in " ".join(instructions("FROM"))


def test_it_installs_through_the_script_ci_runs() -> None:
    assert any("deploy/install.sh" in run for run in instructions("RUN"))


def test_it_runs_as_a_non_root_user_with_volumes_and_a_readiness_healthcheck() -> None:
    (user,) = instructions("USER")
    assert not user.startswith(("root", "0"))
    (volumes,) = instructions("VOLUME")
    assert {"/data", "/models", "/cache"} <= set(re.findall(r'"(/\w+)"', volumes))
    (healthcheck,) = instructions("HEALTHCHECK")
    assert "/health/ready" in healthcheck
