#!/usr/bin/env bash
# Run ON THE DEVICE MACHINE from the repository root, in one call (issue 5's GPU run):
#   run(command="bash benchmarks/gpu/run.sh", carry=[".gpu-wheels"], timeout_s=480)
# after benchmarks/gpu/prepare.sh here. Everything it prints also goes to $OUT/report.txt.
# It installs the carried wheels into the image's Python (the test suite's transformers
# version; if that install fails it goes on with the image's own and says so), builds three
# random-weight Llamas (tiny, small: 114 M, and smollm2: SmolLM2-135M-Instruct's exact shape
# and tokenizer), and runs benchmarks/worker_load.py on the GPU for each: cold start,
# concurrency sweep 1/4/16/64 with /metrics latency, sequential vs batched at 16, and
# warm -> first served request with the weights resident and offloaded to host memory while
# warm (the host <-> GPU copy the CPU runs could not measure). Then, on the smollm2 shape,
# the engine's own batched loop vs transformers' generate_batch, and the NVML gauges.
# Each step has its own time limit so one hang cannot eat the call.
# Rehearse on CPU: DEVICE=cpu DTYPE=fp32 PY=.venv/bin/python SKIP_PIP=1 SIZES=tiny bash benchmarks/gpu/run.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bf16}
SIZES=${SIZES:-tiny small smollm2}
REQUESTS=${REQUESTS:-32}
STEP_S=${STEP_S:-150}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/report.txt") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
stamp() { echo "== $(date -u +%T) $*"; }
stamp "device run, $DEVICE $DTYPE"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
if [ -z "${SKIP_PIP:-}" ]; then
  "$PY" -m pip install -q --no-index --find-links .gpu-wheels fastapi uvicorn pydantic || exit 3
  tv=$(ls .gpu-wheels/transformers-*.whl 2>/dev/null | sed 's/.*transformers-\([^-]*\)-.*/\1/')
  "$PY" -m pip install -q --no-index --find-links .gpu-wheels "transformers==$tv" \
    || echo "!! could not install transformers $tv; going on with the image's own"
fi
"$PY" - <<'PY' || exit 4
import torch, transformers, fastapi, uvicorn, pydantic
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
      "| transformers", transformers.__version__, "| fastapi", fastapi.__version__)
PY
for size in $SIZES; do
  dir="/tmp/surgecast-$size"
  if [ "$size" = smollm2 ]; then
    "$PY" benchmarks/gpu/make_model.py --like .gpu-wheels/smollm2-shape --dest "$dir" || exit 5
  else
    "$PY" benchmarks/gpu/make_model.py --size "$size" --dest "$dir" || exit 5
  fi
  stamp "worker_load, $size"
  timeout "$STEP_S" "$PY" benchmarks/worker_load.py --model-path "$dir" --name "$size" \
    --requests "$REQUESTS" --max-tokens 64 --max-batch 16 \
    --worker-args "--device $DEVICE --dtype $DTYPE" || echo "!! worker_load $size failed ($?)"
done
last=${SIZES##* }
stamp "own batched loop vs transformers generate_batch, $last"
timeout 90 "$PY" benchmarks/worker_load.py --model-path "/tmp/surgecast-$last" \
  --compare-transformers-cb --max-tokens 64 --torch-threads 0 || echo "!! compare failed ($?)"
stamp "NVML gauges on a worker (absent without a GPU)"
timeout 60 "$PY" benchmarks/gpu/check_metrics.py --model-path /tmp/surgecast-tiny \
  --device "$DEVICE" --dtype "$DTYPE" || echo "!! check_metrics failed ($?)"
stamp done
