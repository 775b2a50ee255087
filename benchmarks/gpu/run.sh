#!/usr/bin/env bash
# Run ON THE DEVICE MACHINE from the repository root, in one call (issue 5's GPU run):
#   run(command="bash benchmarks/gpu/run.sh", carry=[".gpu-wheels"], timeout_s=540)
# after benchmarks/gpu/prepare.sh here. Everything it prints also goes to $OUT/report.txt.
# It installs the carried wheels into the image's Python (the test suite's transformers
# version; if that install fails it goes on with the image's own and says so), builds
# random-weight Llamas (tiny; small: 114 M; smollm2: SmolLM2-135M-Instruct's exact shape and
# tokenizer), then runs, the checks never done on a GPU first, each with its own time limit:
#   1. the NVML gauges on a worker (check_metrics.py);
#   2. warm -> first served request on small, resident and with the weights offloaded to host
#      memory while warm (the host <-> GPU copy);
#   3. the engine in process on smollm2: per-step time split into forward and the rest,
#      torch.profiler's top operators (profile_decode.py);
#   4. worker_load.py on smollm2: cold start, sweep 1/16/64 with /metrics latency, sequential
#      vs batched at 16; then the same sweep at --max-batch 64 (decoding is launch-bound, so
#      bigger batches should be nearly free on a GPU);
#      then the same sweep with --engine-process true (decoding in a child process);
#   5. the tiny model's sweep with --gc-freeze true and false, to compare with the first GPU
#      run (results/2026-11-30-run.txt), whose p99s were seconds.
# py-spy's samples of the smollm2 sweep's worker come back as $OUT/spy-smollm2.txt.
# Rehearse on CPU: DEVICE=cpu DTYPE=fp32 PY=.venv/bin/python SKIP_PIP=1 SIZES=tiny bash benchmarks/gpu/run.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bf16}
SIZES=${SIZES:-tiny small smollm2}
REQUESTS=${REQUESTS:-16}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/report.txt") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
stamp() { echo "== $(date -u +%T) $*"; }
has() { [[ " $SIZES " == *" $1 "* ]]; }
stamp "device run, $DEVICE $DTYPE"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
if [ -z "${SKIP_PIP:-}" ]; then
  "$PY" -m pip install -q --no-index --find-links .gpu-wheels fastapi uvicorn pydantic || exit 3
  "$PY" -m pip install -q --no-index --find-links .gpu-wheels py-spy \
    || echo "!! py-spy not installed; the sweep runs without sampling"
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
  if [ "$size" = smollm2 ]; then
    "$PY" benchmarks/gpu/make_model.py --like .gpu-wheels/smollm2-shape --dest /tmp/surgecast-$size
  else
    "$PY" benchmarks/gpu/make_model.py --size "$size" --dest /tmp/surgecast-$size
  fi || exit 5
done
wargs="--device $DEVICE --dtype $DTYPE"
first=${SIZES%% *}
stamp "1. NVML gauges on a worker (absent without a GPU), $first"
timeout 60 "$PY" benchmarks/gpu/check_metrics.py --model-path /tmp/surgecast-$first \
  --device "$DEVICE" --dtype "$DTYPE" || echo "!! check_metrics failed ($?)"
if has small; then
  stamp "2. warm -> first served, small"
  timeout 120 "$PY" benchmarks/worker_load.py --model-path /tmp/surgecast-small --name small \
    --warm-only --worker-args "$wargs" || echo "!! warm starts failed ($?)"
fi
big=smollm2; has smollm2 || big=$first
stamp "3. engine in process, $big"
timeout 60 "$PY" benchmarks/gpu/profile_decode.py --model-path /tmp/surgecast-$big \
  --device "$DEVICE" --dtype "$DTYPE" || echo "!! profile_decode failed ($?)"
stamp "4. worker_load, $big"
timeout 180 "$PY" benchmarks/worker_load.py --model-path /tmp/surgecast-$big --name "$big" \
  --requests "$REQUESTS" --max-tokens 64 --max-batch 16 --concurrency 1,16,64 \
  --worker-args "$wargs" --skip-warm --spy "$OUT/spy-$big.txt" || echo "!! worker_load $big failed ($?)"
stamp "4b. worker_load, $big, max_batch 64"
timeout 60 "$PY" benchmarks/worker_load.py --model-path /tmp/surgecast-$big --name "$big" \
  --requests 64 --max-tokens 64 --max-batch 64 --concurrency 64 --sweep-only \
  --worker-args "$wargs" || echo "!! worker_load $big max_batch 64 failed ($?)"
stamp "4c. worker_load, $big, --engine-process true (decoding in a child process: no GIL shared with HTTP)"
timeout 90 "$PY" benchmarks/worker_load.py --model-path /tmp/surgecast-$big --name "$big" \
  --requests "$REQUESTS" --max-tokens 64 --max-batch 16 --concurrency 1,16,64 --sweep-only \
  --worker-args "$wargs --engine-process true" || echo "!! worker_load $big engine process failed ($?)"
if has tiny && [ "$big" != tiny ]; then
  for gcf in true false; do  # the first GPU run's multi-second p99s: garbage collections?
    stamp "5. worker_load, tiny, --gc-freeze $gcf"
    timeout 60 "$PY" benchmarks/worker_load.py --model-path /tmp/surgecast-tiny --name tiny \
      --requests 64 --max-tokens 64 --max-batch 16 --concurrency 1,16 --sweep-only \
      --worker-args "$wargs --gc-freeze $gcf" || echo "!! worker_load tiny failed ($?)"
  done
fi
stamp done
