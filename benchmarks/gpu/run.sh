#!/usr/bin/env bash
# Run ON THE DEVICE MACHINE from the repository root, in one call (issue 5's GPU run):
#   run(command="bash benchmarks/gpu/run.sh", carry=[".gpu-wheels"], timeout_s=540)
# after benchmarks/gpu/prepare.sh here. Everything it prints also goes to $OUT/report.txt.
# It installs the carried wheels into the image's Python, builds two random Llamas from a
# config (no hub), and runs benchmarks/worker_load.py on the GPU for each: cold start,
# concurrency sweep 1/4/16/64 with /metrics latency, sequential vs batched at 16, and
# warm -> first served request with the weights offloaded to host memory while warm (the
# host <-> GPU copy the CPU runs could not measure). It then checks the NVML gauges.
# Rehearse on CPU: DEVICE=cpu DTYPE=fp32 PY=.venv/bin/python SKIP_PIP=1 SIZES=tiny bash benchmarks/gpu/run.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bf16}
SIZES=${SIZES:-tiny small}
REQUESTS=${REQUESTS:-64}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/report.txt") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
echo "== $(date -u +%FT%TZ) device run, $DEVICE $DTYPE"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
if [ -z "${SKIP_PIP:-}" ]; then
  "$PY" -m pip install -q --no-index --find-links .gpu-wheels fastapi uvicorn pydantic || exit 3
fi
"$PY" - <<'PY' || exit 4
import torch, transformers, fastapi, uvicorn, pydantic
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
      "| transformers", transformers.__version__, "| fastapi", fastapi.__version__)
PY
for size in $SIZES; do
  dir="/tmp/surgecast-$size"
  "$PY" benchmarks/gpu/make_model.py --size "$size" --dest "$dir" || exit 5
  echo "== worker_load, $size"
  timeout 300 "$PY" benchmarks/worker_load.py --model-path "$dir" --name "$size" \
    --requests "$REQUESTS" --max-tokens 64 --max-batch 16 \
    --worker-args "--device $DEVICE --dtype $DTYPE" || echo "!! worker_load $size failed ($?)"
done
echo "== NVML gauges on a worker (absent without a GPU)"
timeout 120 "$PY" benchmarks/gpu/check_metrics.py --model-path /tmp/surgecast-tiny \
  --device "$DEVICE" --dtype "$DTYPE" || echo "!! check_metrics failed ($?)"
echo "== done $(date -u +%FT%TZ)"
