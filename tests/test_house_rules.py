"""The habits that keep the house in order, checked with the tests: ruff's rules
(pyproject ``[tool.ruff.lint]``: pyflakes, imports, bugbear, pyupgrade, simplify) over
the code and its tests, and mypy over ``src/`` at the strictness ``[tool.mypy]`` states.
The layer order of imports is tests/test_layers.py."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    out = _run("ruff", "check", "--no-cache", "src", "tests", "benchmarks", "scripts")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_finds_no_error_in_src() -> None:
    out = _run("mypy")
    assert out.returncode == 0, out.stdout + out.stderr
