#!/usr/bin/env bash
# The wheels the GPU image (Python 3.12, torch 2.11.0+cu130; no diffusers, torchao or
# pydantic) needs for benchmarks/gpu_check.sh, downloaded into .whl/ (kept out of git),
# about 13.5 MB. Carry them with the run: carry [".whl"].
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' "$(git rev-parse --git-path info/exclude)" 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-path info/exclude)"
PY=${PYTHON:-python3}
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl \
  diffusers==0.42.1 torchao==0.18.0 peft==0.21.2 \
  pydantic==2.14.4 pydantic_core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4 \
  annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
du -sh .whl
