"""Where a decode step's time goes, in process (no HTTP): the engine's step-wise batch on the
given device, per step, split into the model forward and the rest (sampling, detokenizing,
cache bookkeeping), at batch 1 and 16, with torch's default intra-op threads and with 1;
then torch.profiler's top operators for a few steps; with ``--scheduler``, the real scheduler
on an event loop at concurrency 1 and 16 (finds stalls that are not the engine's).

    python benchmarks/gpu/profile_decode.py --model-path DIR [--device cuda] [--dtype bf16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from worker_load import inproc_load, table


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def engine_steps(eng: Any, n: int, max_tokens: int) -> dict[str, float]:
    """Admit ``n`` greedy requests and step until all are done; per-step ms, synchronized."""
    from model_worker.engine import EngineRequest, SamplingParams

    dev = eng.device
    fwd_ms: list[float] = []
    inner = eng.forward

    def timed_forward(*a: Any) -> Any:
        _sync(dev)
        t = time.perf_counter()
        out = inner(*a)
        _sync(dev)
        fwd_ms.append((time.perf_counter() - t) * 1000)
        return out

    eng.forward = timed_forward
    try:
        reqs = [
            EngineRequest(
                eng.encode_prompt(f"Request {i}: tell me about autoscaling"),
                SamplingParams(max_tokens, 0.0),
                lambda d, k, f: None,
            )
            for i in range(n)
        ]
        batch = eng.new_batch()
        t0 = time.perf_counter()
        batch.admit(reqs)
        _sync(dev)
        admit_ms = (time.perf_counter() - t0) * 1000
        steps: list[float] = []
        while len(batch):
            t = time.perf_counter()
            batch.step()
            _sync(dev)
            steps.append((time.perf_counter() - t) * 1000)
    finally:
        eng.forward = inner
    fwd = fwd_ms[1:]  # the admit's prefill is fwd_ms[0]
    return {
        "rows": n,
        "admit_ms": admit_ms,
        "steps": len(steps),
        "step_p50_ms": statistics.median(steps),
        "step_max_ms": max(steps),
        "fwd_p50_ms": statistics.median(fwd),
        "rest_p50_ms": statistics.median(s - f for s, f in zip(steps, fwd, strict=False)),
        "tok_s": n * (len(steps) + 1) / ((admit_ms + sum(steps)) / 1000),
    }


def main() -> int:
    """Print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument(
        "--scheduler", action="store_true", help="also the real scheduler in process (slow)"
    )
    args = ap.parse_args()
    import torch

    from model_worker.engine import TransformersEngine

    default_threads = torch.get_num_threads()
    eng = TransformersEngine.load(Path(args.model_path), "bench", args.dtype, args.device)
    eng.eos_ids = frozenset()
    rows = []
    for threads in (default_threads, 1):
        torch.set_num_threads(threads)
        engine_steps(eng, 4, 8)  # warm up this thread setting
        for n in (1, 16):
            rows.append({"threads": threads, **engine_steps(eng, n, args.max_tokens)})
    table(rows, f"engine steps on {eng.device}, {args.dtype}, {args.max_tokens} tokens per row")

    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if eng.device != "cpu" else [])
    with profile(activities=acts) as prof:
        engine_steps(eng, 16, 8)
    print("\ntorch.profiler, 16 rows x 8 tokens, by self CPU time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))

    if not args.scheduler:
        return 0
    rows = []
    for conc in (1, 16):
        rows.append(
            inproc_load(args.model_path, "token", conc, 32, [args.max_tokens], 16)
        )
    table(rows, "the real scheduler in process (no HTTP), 32 requests, torch threads 1")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
