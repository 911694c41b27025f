#!/usr/bin/env bash
# The GPU check: on one H100/H200, within 8 minutes, the serving-path benchmark
# (benchmarks/flux_gpu.py) for the off, compile and fp8 profiles, printed as one table
# with the issue's goals checked under it.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=... to use another interpreter
#
# Budget: the benchmark stops starting cases after BUDGET seconds (default 400) and is
# stopped at 470 s; either way it prints the table of what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
BUDGET=${BUDGET:-400}
mkdir -p .openfal
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>/dev/null || echo "nvidia-smi not found"
"$PY" -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__)"
"$PY" -c "import torchao; print('torchao', torchao.__version__)" 2>/dev/null || echo "torchao not installed: the fp8 profile falls back to compile (pip install 'openfal[gpu]')"
# kernels compiled by one run are reused by the next (the server does the same, OPENFAL_COMPILE_CACHE_DIR)
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$PWD/.openfal/compile-cache/inductor}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$PWD/.openfal/compile-cache/triton}
timeout -s TERM 470 "$PY" benchmarks/flux_gpu.py --profiles off,compile,fp8 --repeats 1 --budget-seconds "$BUDGET" \
  --json .openfal/flux_gpu.json 2>&1 | grep --line-buffered -v -E "it/s\]|Loading|Writing model|_pytree|Failed to load|UserWarning|warn_once"
exit "${PIPESTATUS[0]}"
