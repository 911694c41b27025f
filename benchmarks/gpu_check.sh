#!/usr/bin/env bash
# The GPU check, in one run of at most 8 minutes on one H100 or H200, from random
# full-size weights (nothing downloaded): benchmarks/engine_gpu.py for MODEL (default
# flux-dev), fp8 first, then bf16 compile, then off; correctness before speed; one JSON
# file and the log in $OUT (or .openfal/ when OUT is not set).
#
#   bash benchmarks/fetch_wheels.sh            # here, once: the wheels the GPU image lacks
#   bash benchmarks/gpu_check.sh               # there (MODEL=flux-2-dev, BUDGET=..., PYTHON=...)
#
# The benchmark stops starting sections after BUDGET seconds (default 400) and is sent
# SIGTERM at 465 s; either way it reports and writes what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODEL=${MODEL:-flux-dev}
BUDGET=${BUDGET:-400}
OUT_DIR=${OUT:-$PWD/.openfal}
mkdir -p "$OUT_DIR"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
# kernels compiled by one profile are reused by the next (the server does the same, OPENFAL_COMPILE_CACHE_DIR)
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/openfal-compile/inductor}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/openfal-compile/triton}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap,clocks.max.sm --format=csv,noheader 2>/dev/null || echo "nvidia-smi not found"
  "$PY" -c "import torch, diffusers, transformers, peft, pydantic; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'pydantic', pydantic.__version__)"
  "$PY" -c "import torchao; print('torchao', torchao.__version__)" 2>/dev/null || echo "torchao not importable: the fp8 profile falls back to compile"
} 2>&1 | tee "$OUT_DIR/gpu_check.log"
timeout -s TERM 465 "$PY" benchmarks/engine_gpu.py --model "$MODEL" --budget-seconds "$BUDGET" --json "$OUT_DIR/engine_gpu.json" 2>&1 \
  | tee -a "$OUT_DIR/gpu_check.log" | grep --line-buffered -v -E "it/s\]|Loading|Writing model|_pytree|Failed to load|UserWarning|warn_once|torchvision"
exit "${PIPESTATUS[0]}"
