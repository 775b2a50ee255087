"""Load benchmark for the model worker (prints tables; numbers go into docs/model-worker.md).

Starts a worker process per configuration on a loopback port (or targets ``--url``), then:
  1. cold start: process start -> /readyz 200;
  2. concurrency sweep (default 1, 4, 16, 64): req/s, output tok/s, p50/p99 latency, TTFT
     (streamed requests, so TTFT is what a client sees);
  3. batching vs sequential at concurrency 16 (max_batch 16 vs max_batch 1);
  4. /metrics latency under load at every sweep point, scraped from a separate process (as
     Prometheus does) on the main port and on the dedicated ``--metrics-port``;
  5. warm -> first served: a worker started as warm is promoted by the admin API and a
     request is sent at once; time from the promote call to that response.

  6. ``--admission-ab``: instead of the above, token-level vs batch-level admission
     (``--admission token|batch``), interleaved ``--reps`` times, at ``--concurrency`` with
     mixed ``--mixed-max-tokens`` (default half 8, half 64 tokens): TTFT p50/p99, latency of
     the short and the long requests, throughput. With ``--inproc`` the real scheduler and
     engine run in this process without HTTP (the load generator and the event loop's SSE
     writing no longer share the CPU with the decode thread), eos disabled.

  7. ``--compare-transformers-cb``: instead of the above, in-process and without HTTP, our
     engine's batched decode vs transformers' continuous batching (``generate_batch`` and a
     running manager) on 16 greedy prompts: a warm-up each, then ``--cb-runs`` interleaved
     rounds, median and min/max tok/s, token identity (benchmarks/cb_compare.py).

  .venv/bin/python benchmarks/worker_load.py --model-path DIR [--requests 32] [--max-tokens 32]
      [--worker-args="--quantization int8"]   # extra worker flags for every worker started
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as MpEvent

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
    metrics_port: int

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_worker(model: str, name: str, *flags: str) -> Worker:
    port, mport = free_port(), free_port()
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
            "--metrics-port",
            str(mport),
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
                return Worker(proc, url, time.perf_counter() - t0, mport)
        except httpx.TransportError:
            pass
        time.sleep(0.05)


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@dataclass
class Sample:
    latency_s: float
    ttft_s: float
    tokens: int
    max_tokens: int


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
    return Sample(end, ttft if ttft is not None else end, tokens, max_tokens)


def _probe(port: int, mport: int, stop: MpEvent, out: Connection) -> None:
    """Scrape /metrics on both ports every 50 ms until ``stop``; send back the ms lists."""
    main_ms: list[float] = []
    side_ms: list[float] = []
    conns = {p: http.client.HTTPConnection("127.0.0.1", p, timeout=30) for p in (port, mport)}
    while not stop.is_set():
        for p, acc in ((port, main_ms), (mport, side_ms)):
            t = time.perf_counter()
            conns[p].request("GET", "/metrics")
            r = conns[p].getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"/metrics on port {p} answered {r.status}")
            acc.append((time.perf_counter() - t) * 1000)
        time.sleep(0.05)
    out.send((main_ms, side_ms))


async def run_load(
    url: str, name: str, conc: int, n: int, max_tokens: int | list[int]
) -> dict[str, float]:
    """``n`` streamed requests, ``conc`` at a time; request ``i`` asks for
    ``max_tokens[i % len(max_tokens)]`` tokens when a list is given."""
    mts = max_tokens if isinstance(max_tokens, list) else [max_tokens]
    sem = asyncio.Semaphore(conc)
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=conc + 4)) as c:

        async def task(i: int) -> Sample:
            async with sem:
                return await one(c, url, name, mts[i % len(mts)], i)

        t0 = time.perf_counter()
        samples = await asyncio.gather(*(task(i) for i in range(n)))
        wall = time.perf_counter() - t0
    lat = sorted(s.latency_s for s in samples)
    ttft = sorted(s.ttft_s for s in samples)
    extra: dict[str, float] = {}
    if len(mts) > 1:
        for label, mt in (("short", min(mts)), ("long", max(mts))):
            xs = sorted(s.latency_s for s in samples if s.max_tokens == mt)
            extra[f"{label}_p50_s"] = statistics.median(xs)
    return {
        "conc": conc,
        "req_s": n / wall,
        "tok_s": sum(s.tokens for s in samples) / wall,
        "p50_s": statistics.median(lat),
        "p99_s": pct(lat, 0.99),
        "ttft_p50_s": statistics.median(ttft),
        "ttft_p99_s": pct(ttft, 0.99),
        **extra,
    }


def pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``xs`` (nearest rank)."""
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def measure(w: Worker, name: str, conc: int, n: int, max_tokens: int) -> dict[str, float]:
    """One sweep point, with /metrics scraped from another process while it runs."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    recv, send = ctx.Pipe(duplex=False)
    port = int(w.url.rsplit(":", 1)[1])
    prober = ctx.Process(target=_probe, args=(port, w.metrics_port, stop, send), daemon=True)
    prober.start()
    try:
        row = asyncio.run(run_load(w.url, name, conc, n, max_tokens))
    finally:
        stop.set()
    main_ms, side_ms = (sorted(x) for x in recv.recv())
    prober.join(timeout=10)
    for label, xs in (("metrics", main_ms), ("mport", side_ms)):
        row[f"{label}_p50_ms"] = statistics.median(xs) if xs else float("nan")
        row[f"{label}_p99_ms"] = pct(xs, 0.99) if xs else float("nan")
    row["scrapes"] = len(main_ms)
    return row


def table(rows: list[dict[str, float]], title: str) -> None:
    print(f"\n{title}")
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print(
            "| "
            + " | ".join(f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys)
            + " |"
        )


def inproc_load(
    path: str, admission: str, conc: int, n: int, mts: list[int], max_batch: int
) -> dict[str, float]:
    """The real :class:`Scheduler` and engine on an event loop, no HTTP: ``n`` requests,
    ``conc`` at a time, eos disabled so both admission modes decode the same tokens."""
    from pathlib import Path

    from model_worker.config import WorkerConfig
    from model_worker.engine import SamplingParams, TransformersEngine
    from model_worker.metrics import WorkerMetrics
    from model_worker.scheduler import Prepared, Scheduler

    eng = TransformersEngine.load(Path(path), "bench")
    eng.eos_ids = frozenset()
    cfg = WorkerConfig(
        model_path=Path(path),
        admission=admission,  # type: ignore[arg-type]
        max_batch=max_batch,
        torch_threads=1,
    )

    async def go() -> dict[str, float]:
        sched = Scheduler(eng, WorkerMetrics("bench"), cfg)
        runner = asyncio.create_task(sched.run())
        sem = asyncio.Semaphore(conc)
        ttft: list[float] = []
        lat: dict[int, list[float]] = {mt: [] for mt in mts}

        async def one(i: int) -> int:
            async with sem:
                mt = mts[i % len(mts)]
                ids = eng.encode_prompt(f"Request {i}: tell me about autoscaling")
                prep = Prepared("completion", ids, SamplingParams(mt, 0.0), True, False, "b", 0)
                job = sched.new_job(prep)
                sched.submit(job, bounded=False)
                while True:
                    item = await job.out.get()
                    if isinstance(item, BaseException):
                        raise item
                    if item[2] is not None:
                        break
                assert job.first_token_at is not None and job.finished_at is not None
                ttft.append(job.first_token_at - job.arrival)
                lat[mt].append(job.finished_at - job.arrival)
                return item[1]

        t0 = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(i) for i in range(n))))
        wall = time.perf_counter() - t0
        runner.cancel()
        ttft.sort()
        row = {
            "conc": conc,
            "req_s": n / wall,
            "tok_s": tokens / wall,
            "ttft_p50_s": statistics.median(ttft),
            "ttft_p99_s": pct(ttft, 0.99),
        }
        if len(mts) > 1:
            row["short_p50_s"] = statistics.median(lat[min(mts)])
            row["long_p50_s"] = statistics.median(lat[max(mts)])
        return row

    return asyncio.run(go())


def admission_ab(args: argparse.Namespace) -> None:
    """Token- vs batch-level admission, interleaved: for each rep, each mode gets a fresh
    worker and the whole concurrency sweep with mixed ``max_tokens``."""
    mts = [int(x) for x in args.mixed_max_tokens.split(",")]
    concs = [int(c) for c in args.concurrency.split(",")]
    extra = shlex.split(args.worker_args)
    rows: list[dict[str, float]] = []
    for rep in range(1, args.reps + 1):
        for mode in ("batch", "token"):
            if args.inproc:
                for conc in concs:
                    n = max(args.requests, 2 * conc)
                    row = inproc_load(args.model_path, mode, conc, n, mts, args.max_batch)
                    rows.append({"admission": mode, "rep": rep, **row})  # type: ignore[dict-item]
                continue
            w = start_worker(
                args.model_path,
                args.name,
                "--max-batch",
                str(args.max_batch),
                "--admission",
                mode,
                *extra,
            )
            try:
                asyncio.run(run_load(w.url, args.name, 4, 4, 4))  # warm the HTTP path
                for conc in concs:
                    n = max(args.requests, 2 * conc)
                    row = asyncio.run(run_load(w.url, args.name, conc, n, mts))
                    rows.append({"admission": mode, "rep": rep, **row})  # type: ignore[dict-item]
                    print(f"  {mode} rep {rep} conc {conc}: done", flush=True)
            finally:
                w.stop()
    rows.sort(key=lambda r: (r["conc"], str(r["admission"]), r["rep"]))
    where = "in-process scheduler + engine, no HTTP, eos off" if args.inproc else "over HTTP"
    table(
        rows,
        f"admission A/B, {where} (max_batch {args.max_batch}; max_tokens alternating {mts}; "
        f"at least {args.requests} requests and 2x concurrency per point)",
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--name", default="bench")
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--requests", type=int, default=32, help="requests per sweep point")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--worker-args", default="", help="extra flags for every worker started")
    ap.add_argument(
        "--sweep-only", action="store_true", help="skip the sequential and warm-start runs"
    )
    ap.add_argument("--skip-warm", action="store_true", help="skip the warm-start runs")
    ap.add_argument(
        "--spy",
        metavar="FILE",
        help="sample the sweep's worker with py-spy (every thread, 100 Hz) into FILE "
        "(collapsed stacks, one line per stack with its count; needs py-spy on PATH)",
    )
    ap.add_argument(
        "--warm-only", action="store_true", help="only the warm -> first served request runs"
    )
    ap.add_argument(
        "--compare-transformers-cb",
        action="store_true",
        help="only compare the engine's batching with transformers' continuous batching",
    )
    ap.add_argument("--torch-threads", type=int, default=1, help="for --compare-transformers-cb")
    ap.add_argument(
        "--cb-runs", type=int, default=5, help="for --compare-transformers-cb: measured rounds"
    )
    ap.add_argument(
        "--admission-ab",
        action="store_true",
        help="only compare --admission token and batch (interleaved, mixed max_tokens)",
    )
    ap.add_argument("--mixed-max-tokens", default="8,64", help="for --admission-ab")
    ap.add_argument("--reps", type=int, default=2, help="for --admission-ab")
    ap.add_argument(
        "--inproc",
        action="store_true",
        help="for --admission-ab: drive the scheduler in-process (no HTTP, no worker process)",
    )
    args = ap.parse_args()
    if args.admission_ab:
        admission_ab(args)
        return 0
    if args.compare_transformers_cb:
        from cb_compare import compare

        compare(args.model_path, 16, args.max_tokens, args.torch_threads, args.cb_runs)
        return 0
    import torch

    device = "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(
        f"model {args.model_path}, device {device}, {os.cpu_count()} CPUs, "
        f"{args.requests} requests x {args.max_tokens} tokens per point"
    )

    extra = shlex.split(args.worker_args)
    if args.warm_only:
        warm_starts(args.model_path, args.name, extra)
        return 0
    w = start_worker(args.model_path, args.name, "--max-batch", str(args.max_batch), *extra)
    try:
        print(f"cold start (process start -> ready): {w.cold_start_s:.2f} s")
        st = httpx.get(w.url + "/status").json()
        print(
            f"worker: device {st['device']}, quantization {st['quantization']}, weights "
            f"{st['weight_bytes'] / 2**20:.1f} MiB, process RSS {rss_mib(w.proc.pid):.0f} MiB"
        )
        asyncio.run(run_load(w.url, args.name, 4, 4, 4))  # warm the HTTP path
        spy = start_spy(w.proc.pid, args.spy) if args.spy else None
        try:
            rows = [
                measure(w, args.name, conc, max(args.requests, conc), args.max_tokens)
                for conc in (int(c) for c in args.concurrency.split(","))
            ]
        finally:
            if spy is not None:
                stop_spy(spy)
        table(
            rows,
            f"concurrency sweep (max_batch {args.max_batch}); metrics_* = GET /metrics on the "
            "main port, mport_* = on --metrics-port, scraped every 50 ms from another process",
        )
        batched = next((r for r in rows if r["conc"] == 16), None)
    finally:
        w.stop()

    if args.sweep_only:
        return 0
    if batched is not None:
        seq = start_worker(args.model_path, args.name, "--max-batch", "1", *extra)
        try:
            srow = asyncio.run(
                run_load(seq.url, args.name, 16, max(args.requests, 16), args.max_tokens)
            )
        finally:
            seq.stop()
        table(
            [
                {"mode": f"batched (max_batch {args.max_batch})", **srow, **batched},  # type: ignore[dict-item]
                {"mode": "sequential (max_batch 1)", **srow},
            ],  # type: ignore[dict-item]
            "batching vs sequential at concurrency 16",
        )
        print(f"throughput ratio batched/sequential: {batched['tok_s'] / srow['tok_s']:.2f}x")

    if not args.skip_warm:
        warm_starts(args.model_path, args.name, extra)
    return 0


def start_spy(pid: int, out: str) -> subprocess.Popen[bytes] | None:
    """Start ``py-spy record`` on ``pid`` (collapsed stacks of every thread into ``out``);
    None, with a note, when py-spy is missing or cannot attach."""
    import shutil

    exe = shutil.which("py-spy")
    if exe is None:
        print("!! --spy: py-spy not found on PATH; the sweep runs without it")
        return None
    cmd = [exe, "record", "--pid", str(pid), "--threads", "--rate", "100", "--format", "raw",
           "--output", out, "--nonblocking"]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    if spy.poll() is not None:
        err = spy.stderr.read().decode(errors="replace").strip() if spy.stderr else ""
        print(f"!! --spy: py-spy exited {spy.returncode}: {err[-300:]}")
        return None
    return spy


def stop_spy(spy: subprocess.Popen[bytes]) -> None:
    """Stop ``py-spy record`` so it writes its file (SIGINT, as Ctrl-C would)."""
    import signal

    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()


def warm_starts(model_path: str, name: str, extra: list[str]) -> None:
    """Warm -> first served request, with the weights resident and offloaded while warm."""
    for offload in (False, True):
        flags = ["--start-role", "warm", *extra]
        if offload:
            flags += ["--offload-when-warm", "true"]
        warm = start_worker(model_path, name, *flags)
        try:
            if offload:  # the worker offloads once it is idle and warm
                t_off, st = time.perf_counter(), {}
                while time.perf_counter() - t_off < 60:
                    st = httpx.get(warm.url + "/status").json()
                    if st["weights"] == "host":
                        break
                    time.sleep(0.02)
                else:
                    print(f"\n!! weights not offloaded 60 s after ready; /status: {st}")
                    continue
                print(f"\nweights on the host {time.perf_counter() - t_off:.3f} s after ready")
            body = {"model": name, "prompt": "hello", "max_tokens": 1}
            t0 = time.perf_counter()
            r = httpx.post(warm.url + "/admin/promote", headers={"Authorization": "Bearer bench"})
            r.raise_for_status()
            httpx.post(warm.url + "/v1/completions", json=body, timeout=60).raise_for_status()
            took = time.perf_counter() - t0
            label = "weights offloaded while warm" if offload else "weights resident"
            print(
                f"\nwarm -> first served request (promote call + 1-token request), {label}: "
                f"{took:.3f} s"
            )
        finally:
            warm.stop()


if __name__ == "__main__":
    sys.exit(main())
