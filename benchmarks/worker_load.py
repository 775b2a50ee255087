"""Load benchmark for the model worker (prints tables; numbers go into docs/model-worker.md).

Starts a worker process per configuration on a loopback port (or targets ``--url``), then:
  1. cold start: process start -> /readyz 200;
  2. concurrency sweep (default 1, 4, 16, 64): req/s, output tok/s, p50/p99 latency, TTFT
     (streamed requests, so TTFT is what a client sees);
  3. batching vs sequential at concurrency 16 (max_batch 16 vs max_batch 1);
  4. /metrics latency while the sweep's top concurrency runs;
  5. warm -> first served: a worker started as warm is promoted by the admin API and a
     request is sent at once; time from the promote call to that response.

  .venv/bin/python benchmarks/worker_load.py --model-path DIR [--requests 32] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    url: str
    cold_start_s: float

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_worker(model: str, name: str, *flags: str) -> Worker:
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "model_worker",
            "--model-path",
            model,
            "--model-name",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--max-queue",
            "1024",
            "--cache-size",
            "0",
            "--admin-token",
            "bench",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return Worker(proc, url, time.perf_counter() - t0)
        except httpx.TransportError:
            pass
        time.sleep(0.05)


@dataclass
class Sample:
    latency_s: float
    ttft_s: float
    tokens: int


async def one(client: httpx.AsyncClient, url: str, name: str, max_tokens: int, i: int) -> Sample:
    body = {
        "model": name,
        "prompt": f"Request {i}: tell me about autoscaling",
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft, tokens = None, 0
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif ttft is None:
                ttft = time.perf_counter() - t0
    end = time.perf_counter() - t0
    return Sample(end, ttft if ttft is not None else end, tokens)


async def run_load(
    url: str, name: str, conc: int, n: int, max_tokens: int, probe_metrics: bool = False
) -> tuple[dict[str, float], list[float]]:
    sem = asyncio.Semaphore(conc)
    metrics_ms: list[float] = []
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=conc + 4)) as c:

        async def task(i: int) -> Sample:
            async with sem:
                return await one(c, url, name, max_tokens, i)

        async def probe() -> None:
            while True:
                t = time.perf_counter()
                (await c.get(url + "/metrics")).raise_for_status()
                metrics_ms.append((time.perf_counter() - t) * 1000)
                await asyncio.sleep(0.2)

        prober = asyncio.create_task(probe()) if probe_metrics else None
        t0 = time.perf_counter()
        samples = await asyncio.gather(*(task(i) for i in range(n)))
        wall = time.perf_counter() - t0
        if prober:
            prober.cancel()
    lat = sorted(s.latency_s for s in samples)
    ttft = sorted(s.ttft_s for s in samples)

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    row = {
        "conc": conc,
        "req_s": n / wall,
        "tok_s": sum(s.tokens for s in samples) / wall,
        "p50_s": statistics.median(lat),
        "p99_s": pct(lat, 0.99),
        "ttft_p50_s": statistics.median(ttft),
        "ttft_p99_s": pct(ttft, 0.99),
    }
    return row, metrics_ms


def table(rows: list[dict[str, float]], title: str) -> None:
    print(f"\n{title}")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print(
            "| "
            + " | ".join(f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys)
            + " |"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--name", default="bench")
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--requests", type=int, default=32, help="requests per sweep point")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=16)
    args = ap.parse_args()
    import torch

    device = "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(
        f"model {args.model_path}, device {device}, {os.cpu_count()} CPUs, "
        f"{args.requests} requests x {args.max_tokens} tokens per point"
    )

    w = start_worker(args.model_path, args.name, "--max-batch", str(args.max_batch))
    try:
        print(f"cold start (process start -> ready): {w.cold_start_s:.2f} s")
        asyncio.run(run_load(w.url, args.name, 4, 4, 4))  # warm the HTTP path
        rows, probe = [], []
        concs = [int(c) for c in args.concurrency.split(",")]
        for conc in concs:
            row, ms = asyncio.run(
                run_load(
                    w.url,
                    args.name,
                    conc,
                    max(args.requests, conc),
                    args.max_tokens,
                    probe_metrics=conc == max(concs),
                )
            )
            rows.append(row)
            probe += ms
        table(rows, f"concurrency sweep (max_batch {args.max_batch})")
        if probe:
            probe.sort()
            print(
                f"\n/metrics under load (concurrency {max(concs)}): p50 "
                f"{statistics.median(probe):.1f} ms, max {probe[-1]:.1f} ms, n={len(probe)}"
            )
        batched = next((r for r in rows if r["conc"] == 16), None)
    finally:
        w.stop()

    if batched is not None:
        seq = start_worker(args.model_path, args.name, "--max-batch", "1")
        try:
            srow, _ = asyncio.run(
                run_load(seq.url, args.name, 16, max(args.requests, 16), args.max_tokens)
            )
        finally:
            seq.stop()
        table(
            [
                {"mode": f"batched (max_batch {args.max_batch})", **batched},  # type: ignore[dict-item]
                {"mode": "sequential (max_batch 1)", **srow},
            ],  # type: ignore[dict-item]
            "batching vs sequential at concurrency 16",
        )
        print(f"throughput ratio batched/sequential: {batched['tok_s'] / srow['tok_s']:.2f}x")

    warm = start_worker(args.model_path, args.name, "--start-role", "warm")
    try:
        body = {"model": args.name, "prompt": "hello", "max_tokens": 1}
        t0 = time.perf_counter()
        r = httpx.post(warm.url + "/admin/promote", headers={"Authorization": "Bearer bench"})
        r.raise_for_status()
        httpx.post(warm.url + "/v1/completions", json=body, timeout=60).raise_for_status()
        print(
            f"\nwarm -> first served request (promote call + 1-token request): "
            f"{time.perf_counter() - t0:.3f} s"
        )
    finally:
        warm.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
