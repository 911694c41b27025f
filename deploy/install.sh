#!/bin/sh
# Installs openfal into a virtual environment: the container image's install step, also
# run by CI (deploy/check-install.sh) into a throwaway venv, so it is tested where no
# image can be built.
#
#   deploy/install.sh [--cpu] [--torch-index URL|pip] VENV [SOURCE]
#
# GPU (default): torch's CUDA build from PyTorch's wheel index for the CUDA runtime the
# image is based on, then openfal with its [gpu] extra (torchao, for float8). --cpu: the
# CPU build of torch and no extra (the demo image). torch's version is the one
# pyproject.toml pins. --torch-index pip takes torch from pip's own configured index.
# SOURCE is the openfal source tree (default: the one this script is in); it is
# installed as a package (not editable), so the tree can be dropped afterwards.
set -eu

variant=gpu
torch_index=
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) variant=cpu; shift ;;
        --torch-index) torch_index=$2; shift 2 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--cpu] [--torch-index URL|pip] VENV [SOURCE]" >&2; exit 2; }
venv=$1
source_dir=${2:-$(cd "$(dirname "$0")/.." && pwd)}

# the CUDA build matching the image's base (Dockerfile: CUDA_IMAGE, CUDA 13.0)
case "$variant" in
    gpu) default_index=https://download.pytorch.org/whl/cu130; extra='[gpu]' ;;
    cpu) default_index=https://download.pytorch.org/whl/cpu; extra='' ;;
esac
torch_index=${torch_index:-$default_index}

torch_version=$(sed -n 's/^ *"torch==\([^"]*\)".*/\1/p' "$source_dir/pyproject.toml")
[ -n "$torch_version" ] || { echo "no torch== pin in $source_dir/pyproject.toml" >&2; exit 1; }

python3 -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install --no-cache-dir --quiet --upgrade pip
if [ "$torch_index" = pip ]; then
    "$pip" install --no-cache-dir --quiet "torch==$torch_version"
else
    "$pip" install --no-cache-dir --quiet --index-url "$torch_index" "torch==$torch_version"
fi
# torch is already satisfied, so openfal's own requirement does not fetch another build
"$pip" install --no-cache-dir --quiet "$source_dir$extra"
"$pip" check
"$venv/bin/openfal" --help >/dev/null
echo "openfal installed in $venv (torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)'), $variant)"
