"""benchmarks/engine_gpu.py --smoke runs the GPU check's benchmark on CPU with the tiny
weights (profile off only here: compiling belongs to test_compiled_engine.py): the
reference, correctness, the timed rows through ``LocalBackend.run``, the ``high`` tier
and the 503 path of an out-of-memory (raised in the transformer: a CPU cannot run out
of device memory), so the GPU script is known to work before a GPU is lent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_benchmark_runs_its_serving_path_in_smoke_mode(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "engine_gpu.py"), "--smoke", "--profiles", "off", "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["model"] == "flux-dev" and results["reference_nan"] == 0
    assert [c["profile"] for c in results["correctness"]] == ["off"] and results["correctness"][0]["max_error"] == 0
    assert {r["row"] for r in results["rows"]} == {"plain 64x48", "acceleration high"}
    assert results["oom"]["status"] == 503 and results["oom"]["next_request"] == "completed"
