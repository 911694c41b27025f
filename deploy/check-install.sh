#!/bin/sh
# CI: the image's install step (deploy/install.sh, CPU variant) into a throwaway venv,
# then the installed command does what a container's first minutes do: migrate a
# database, plan models for a card, import the local backend. No container is built
# (CI has no Docker daemon); this is the part of the image that can be tested here.
set -eu
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# torch from pip's configured index: CI reaches package registries only, not PyTorch's wheel index.
# PIP_COMPILE=0: no bytecode for this throwaway venv (the image keeps pip's default), which
# halves the install; the commands below write what they import (PYTHONDONTWRITEBYTECODE off).
PIP_COMPILE=0 sh deploy/install.sh --cpu --torch-index pip "$work/venv" "$PWD"
unset PYTHONDONTWRITEBYTECODE
venv="$work/venv/bin"
"$venv/openfal" --data-dir "$work/data" migrate
"$venv/openfal" models plan --gpu-memory 24 >/dev/null
"$venv/python" -c 'import openfal.backends.local.backend, diffusers, torch; assert not torch.version.cuda'
"$venv/openfal" worker --help | grep -q -- '--models'
echo "deploy/check-install.sh: the image's install step works"
