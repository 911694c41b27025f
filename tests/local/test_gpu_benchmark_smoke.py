"""benchmarks/flux_gpu.py --smoke runs the serving-path benchmark on CPU with the tiny
models (profile off only here: compiling belongs to test_compiled_engine.py), so the
GPU script is known to work before a GPU is lent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_benchmark_runs_its_serving_path_in_smoke_mode(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "flux_gpu.py"), "--smoke", "--profiles", "off", "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("off ")]
    assert len(table) == 5  # every smoke case, one row each, and the LoRA row
    assert "LoRA row" in done.stdout and "first use" in done.stdout
    assert '"request_s"' in out.read_text()
