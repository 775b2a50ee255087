"""Paired A/B of two worker configurations over HTTP (numbers in docs/model-worker.md).

Both workers are started once (``benchmarks/worker_load.py``'s ``start_worker``) and the load
runs alternate A, B, A, B ... at each concurrency, so drift in the machine's other load hits
both alike. Per run: output tok/s, TTFT p50, the CPU seconds of the worker's processes (its
children included: the engine process), decode steps and mean rows per step (from
``/metrics``).

  .venv/bin/python benchmarks/worker_paired.py --model-path DIR [--reps 5] [--requests 128]
      [--concurrency 16,64] [--a="--engine-process false"] [--b="--engine-process true"]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import worker_load as wl

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system seconds of ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            kids = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            out += tree(int(kid))
    return out


def steps(url: str) -> tuple[float, float]:
    """(decode steps, rows summed over steps) so far, from ``/metrics``."""
    values = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        for key in ("surgecast_worker_batch_size_count", "surgecast_worker_batch_size_sum"):
            if line.startswith(key):
                values[key] = float(line.rsplit(" ", 1)[1])
    return values["surgecast_worker_batch_size_count"], values["surgecast_worker_batch_size_sum"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--name", default="tiny")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--concurrency", default="16,64")
    ap.add_argument("--common", default="--max-batch 16 --torch-threads 1")
    ap.add_argument("--a", default="--engine-process false")
    ap.add_argument("--b", default="--engine-process true")
    args = ap.parse_args()
    common = shlex.split(args.common)
    workers = {
        label: wl.start_worker(args.model_path, args.name, *common, *shlex.split(flags))
        for label, flags in (("A", args.a), ("B", args.b))
    }
    print(f"A = {args.a!r}, B = {args.b!r}, common {args.common!r}")
    results: dict[tuple[int, str], list[float]] = {}
    try:
        for w in workers.values():
            asyncio.run(wl.run_load(w.url, args.name, 4, 8, 4))  # warm the HTTP path
        for conc in (int(c) for c in args.concurrency.split(",")):
            for rep in range(args.reps):
                for label, w in workers.items():
                    pids = tree(w.proc.pid)
                    c0, s0 = sum(cpu_s(p) for p in pids), steps(w.url)
                    t0 = time.perf_counter()
                    r = asyncio.run(
                        wl.run_load(w.url, args.name, conc, args.requests, args.max_tokens)
                    )
                    wall = time.perf_counter() - t0
                    c1, s1 = sum(cpu_s(p) for p in pids), steps(w.url)
                    tps = args.requests * args.max_tokens / wall
                    n = max(1.0, s1[0] - s0[0])
                    results.setdefault((conc, label), []).append(tps)
                    print(
                        f"conc={conc} rep={rep} {label}: tok/s={tps:.0f} "
                        f"ttft_p50={r['ttft_p50_s']:.3f}s worker_cpu={c1 - c0:.2f}s "
                        f"steps={n:.0f} rows/step={(s1[1] - s0[1]) / n:.1f} "
                        f"load={os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
    finally:
        for w in workers.values():
            w.stop()
    for (conc, label), tps_all in sorted(results.items()):
        print(
            f"conc={conc} {label}: median tok/s {statistics.median(tps_all):.0f}, "
            f"runs {[round(t) for t in tps_all]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
