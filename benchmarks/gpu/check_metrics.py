"""Start one worker, serve a few requests, and print its GPU gauges from ``/metrics``.

    python benchmarks/gpu/check_metrics.py --model-path DIR [--device cuda] [--dtype bf16]

On a GPU the NVML gauges (``surgecast_worker_gpu_utilization_ratio``,
``surgecast_worker_gpu_memory_used_bytes``) must be there, non-negative, and memory above
zero; without one they must be absent (not zero). Exit 1 when that does not hold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from worker_load import start_worker


def main() -> int:
    """Check the gauges; 0 when they are as the device says they should be."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16")
    args = ap.parse_args()
    w = start_worker(args.model_path, "check", "--device", args.device, "--dtype", args.dtype)
    try:
        for i in range(8):
            httpx.post(w.url + "/v1/completions", json={
                "model": "check", "prompt": f"Hello {i}", "max_tokens": 16}, timeout=60)
        text = httpx.get(w.url + "/metrics", timeout=10).text
    finally:
        w.stop()
    gauges = [ln for ln in text.splitlines()
              if ln.startswith("surgecast_worker_gpu_") and not ln.startswith("#")]
    for ln in gauges:
        print(ln)
    state = [ln for ln in text.splitlines() if ln.startswith("surgecast_worker_state{")]
    print("\n".join(state))
    if args.device.startswith("cuda"):
        mem = [float(ln.split()[-1]) for ln in gauges if "memory_used" in ln]
        ok = bool(mem) and all(m > 0 for m in mem) and all(
            float(ln.split()[-1]) >= 0 for ln in gauges)
    else:
        ok = not gauges
    print("gauges as expected" if ok else "GAUGES NOT AS EXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
