#!/usr/bin/env bash
# A second, shorter device call (about 4 min) after run.sh showed slow batched serving on the
# GPU: profile_decode.py in process on SmolLM2's shape, then the HTTP sweep at concurrency 1
# and 16 with the worker's defaults and with --torch-threads 1 --decode-nice 0.
#   run(command="bash benchmarks/gpu/diagnose.sh", carry=[".gpu-wheels"], timeout_s=270)
# Rehearse on CPU: DEVICE=cpu DTYPE=fp32 PY=.venv/bin/python SKIP_PIP=1 MODEL=/tmp/surgecast-tiny bash benchmarks/gpu/diagnose.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bf16}
MODEL=${MODEL:-}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/diagnose.txt") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
stamp() { echo "== $(date -u +%T) $*"; }
stamp "diagnose, $DEVICE $DTYPE"
if [ -z "${SKIP_PIP:-}" ]; then
  tv=$(ls .gpu-wheels/transformers-*.whl | sed 's/.*transformers-\([^-]*\)-.*/\1/')
  "$PY" -m pip install -q --no-index --find-links .gpu-wheels fastapi uvicorn pydantic \
    "transformers==$tv" || exit 3
fi
if [ -z "$MODEL" ]; then
  MODEL=/tmp/surgecast-smollm2
  "$PY" benchmarks/gpu/make_model.py --like .gpu-wheels/smollm2-shape --dest "$MODEL" || exit 5
fi
stamp profile_decode
timeout 80 "$PY" benchmarks/gpu/profile_decode.py --model-path "$MODEL" --device "$DEVICE" \
  --dtype "$DTYPE" || echo "!! profile_decode failed ($?)"
for flags in "" "--torch-threads 1 --decode-nice 0"; do
  stamp "HTTP sweep, worker flags: ${flags:-defaults}"
  timeout 70 "$PY" benchmarks/worker_load.py --model-path "$MODEL" --name s --requests 16 \
    --max-tokens 64 --concurrency 1,16 --sweep-only \
    --worker-args "--device $DEVICE --dtype $DTYPE $flags" || echo "!! sweep failed ($?)"
done
stamp done
