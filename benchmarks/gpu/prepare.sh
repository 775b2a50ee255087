#!/usr/bin/env bash
# Run HERE (a machine with PyPI) before a device call: the worker's Python packages that
# the device image lacks (fastapi, uvicorn, pydantic and their dependencies; torch,
# transformers, safetensors, accelerate, prometheus-client, nvidia-ml-py and httpx are in
# the image), as wheels for its Python 3.12 on x86-64, into .gpu-wheels/ (git-ignored;
# name it in the device call's `carry`). About 4 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP=${PIP:-.venv/bin/pip}
rm -rf .gpu-wheels && mkdir -p .gpu-wheels
"$PIP" download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 -d .gpu-wheels fastapi uvicorn pydantic
du -sh .gpu-wheels
