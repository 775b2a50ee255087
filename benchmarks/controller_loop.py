"""Cost of the controller loop per target: ticks (fetch excluded and included), refits,
memory; and how many targets one core serves per 15-s interval (issue 4's benchmark).

Three parts, each printed as a markdown table:

1. **Fetch excluded.** ``N`` real :class:`~autoscaler.controller.target.TargetRunner`\\ s
   (real forecasters, guard, policy and :class:`ControllerMetrics`) over in-memory
   sources: a :class:`ReplaySource` per target serving a slice of the NASA 1-min trace (a
   different offset per target) and an in-memory pod reader. Every runner is refitted once
   (timed: the refit cost), one warm-up round runs untimed, then ``K`` rounds tick every
   target once each, ``now`` advancing 15 s per round, so a new 1-min bucket arrives (and
   the model is ``update()``\\ d) every 4th tick, as live. Targets per core per 15 s is
   ``15 s / mean tick`` (this process ticks on one thread: one core).
2. **Fetch included.** The same runners against a real Prometheus (``promtool``-backfilled
   per-target counters and gauges from the trace: ``surgecast_worker_requests_total{target=
   "t17",status="200"}`` and friends, read by :class:`PrometheusSource` with the
   ``surgecast`` preset and a per-target selector) and the fake Kubernetes API server (one
   Deployment and one ``PredictiveAutoscaler`` per target, :class:`KubernetesActuator` and
   the status writer, official client over real HTTP). Each tick is split into Prometheus
   queries, Kubernetes reads/writes, status write and the core; the ticking thread's CPU
   time (``time.thread_time``) is the client-side CPU a tick costs when the fetch latency
   is I/O wait hidden by threads.
3. **Memory per target.** ``tracemalloc`` growth per runner after refit and a few ticks,
   with 7 days (the CRD default) and 3 days of 1-min history.

Every tick is checked: a decision made, no error, the model fitted and forecasting.

Run: ``nice -n 10 .venv/bin/python benchmarks/controller_loop.py`` (a few minutes) or
``--quick`` (under a minute). ``--profile MODEL`` prints a cProfile of the fetch-excluded
ticks of one model.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import logging
import math
import pstats
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _sub in ("tests/controller", "tests/adapters"):  # test support: replay source, fakes
    if str(ROOT / _sub) not in sys.path:
        sys.path.insert(0, str(ROOT / _sub))

from replay_source import ReplaySource  # noqa: E402

from autoscaler.config import PredictiveAutoscalerSpec, validate_spec  # noqa: E402
from autoscaler.controller.metrics import ControllerMetrics  # noqa: E402
from autoscaler.controller.target import TargetRunner  # noqa: E402
from autoscaler.core.signals import PodCounts, Signals  # noqa: E402
from forecasting.series import Series, parse_duration  # noqa: E402

STEP_S = 60.0
INTERVAL_S = 15.0
#: simulated "now" of the first tick for the in-memory part: 5 s past a grid minute
NOW0 = 1_800_000_000.0 - 1_800_000_000.0 % STEP_S + 5.0
TRACE = "nasa_http_1995"


# ----------------------------------------------------------------------------- inputs
def traces_dir() -> Path:
    """``$SURGECAST_TRACES`` or ``../shared/traces`` (as the tests find them)."""
    import os

    env = os.environ.get("SURGECAST_TRACES")
    return Path(env) if env else ROOT.parent / "shared" / "traces"


def load_trace(name: str = TRACE) -> Series:
    """A shared 1-min trace as req/s."""
    path = traces_dir() / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"trace {path} not found; set SURGECAST_TRACES")
    return Series.from_csv(path).as_rate()


def target_slices(trace: Series, n: int, history_s: float, span_s: float,
                  now0: float) -> list[Series]:
    """One slice of ``trace`` per target, placed so that ``history_s`` of it lies before
    ``now0`` and ``span_s`` after; target ``i`` starts at its own offset in the trace
    (moved on past windows that lie in an outage: at least half the history and 90 % of the
    last hour and the ticks' span observed)."""
    need = int(history_s // STEP_S) + int(span_s // STEP_S) + 4
    room = len(trace) - need
    if room <= 0:
        raise ValueError(f"trace has {len(trace)} buckets, need {need}")
    start = math.floor(now0 / STEP_S) * STEP_S - (int(history_s // STEP_S) + 2) * STEP_S
    hb = int(history_s // STEP_S)
    out = []
    for i in range(n):
        off = (i * 7919) % room  # a prime stride: spread over the whole trace
        for _ in range(200):  # skip windows inside the trace's outages (NASA: 37 h)
            v = trace.values[off: off + need]
            if (np.isfinite(v[:hb]).mean() >= 0.5
                    and np.isfinite(v[hb - 60:]).mean() >= 0.9):
                break
            off = (off + 997) % room
        else:
            raise ValueError(f"no window of the trace is observed enough for target {i}")
        out.append(trace.slice(off, off + need).replace(start_s=start))
    return out


def spec_body(model: str, history: str, deployment: str = "worker") -> dict[str, Any]:
    """The spec every benchmarked target uses (NASA: about 14 replicas at its mean)."""
    return {
        "scaleTargetRef": {"name": deployment},
        "minReplicas": 1, "maxReplicas": 60,
        "warmPool": {"minReplicas": 0, "maxReplicas": 4},
        "forecast": {"model": model, "history": history, "step": "1m", "refitEvery": "1h"},
        "capacity": {"requestsPerSecondPerReplica": 0.05},
        "leadTime": {"mode": "Fixed", "coldStart": "120s"},
        "interval": "15s",
        "mode": "Auto",
    }


def make_spec(model: str, history: str) -> PredictiveAutoscalerSpec:
    """:func:`spec_body`, validated."""
    return validate_spec(spec_body(model, history))


class MemPods:
    """An in-memory pod reader/actuator: pods are Ready the moment they are asked for."""

    def __init__(self, replicas: int = 2) -> None:
        self.active, self.warm = replicas, 0
        self.applies = 0
        self.events = 0

    def observe(self) -> tuple[PodCounts, list[Any]]:
        return PodCounts(active=self.active, warm=self.warm, starting=0,
                         desired=self.active + self.warm), []

    def apply(self, active: int, warm: int, *, reason: str = "", message: str = "",
              reuse_observation: bool = False) -> None:
        self.active, self.warm = active, warm
        self.applies += 1

    def event(self, reason: str, message: str, *, type_: str = "Normal") -> None:
        self.events += 1


class Stopwatch:
    """Seconds and calls accumulated by the wrappers below."""

    def __init__(self) -> None:
        self.s = 0.0
        self.cpu_s = 0.0  # this thread's CPU time (client side only)
        self.calls = 0

    def time(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        c0 = time.thread_time()
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.s += time.perf_counter() - t0
            self.cpu_s += time.thread_time() - c0
            self.calls += 1


class TimedSource:
    """A MetricsSource that times the wrapped one."""

    def __init__(self, inner: Any, watch: Stopwatch) -> None:
        self.inner, self.watch = inner, watch

    def signals(self, now_s: float) -> Signals:
        out: Signals = self.watch.time(self.inner.signals, now_s)
        return out

    def history(self, start_s: float, end_s: float, step_s: float) -> Series:
        out: Series = self.watch.time(self.inner.history, start_s, end_s, step_s)
        return out


class TimedPods:
    """A pod reader/actuator that times the wrapped one."""

    def __init__(self, inner: Any, watch: Stopwatch) -> None:
        self.inner, self.watch = inner, watch

    def observe(self) -> tuple[PodCounts, list[Any]]:
        out: tuple[PodCounts, list[Any]] = self.watch.time(self.inner.observe)
        return out

    def apply(self, active: int, warm: int, *, reason: str = "", message: str = "",
              reuse_observation: bool = False) -> None:
        self.watch.time(self.inner.apply, active, warm, reason=reason, message=message,
                        reuse_observation=reuse_observation)

    def event(self, reason: str, message: str, *, type_: str = "Normal") -> None:
        self.watch.time(self.inner.event, reason, message, type_=type_)


# ----------------------------------------------------------------------------- the loop
@dataclass
class Target:
    """One runner and the stopwatches around its adapters."""

    runner: TargetRunner
    prom: Stopwatch
    kube: Stopwatch
    status: Stopwatch


@dataclass
class LoopResult:
    """Per-tick measurements of one run (seconds)."""

    model: str
    targets: int
    rounds: int
    tick_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    prom_s: list[float] = field(default_factory=list)
    kube_s: list[float] = field(default_factory=list)
    status_s: list[float] = field(default_factory=list)
    adapter_cpu_s: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    refit_s: list[float] = field(default_factory=list)
    new_bucket: list[bool] = field(default_factory=list)
    decided: list[tuple[int, int, str]] = field(default_factory=list)
    decisions: int = 0
    forecasts: int = 0
    predictions_used: int = 0
    applied: int = 0
    model_updates: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def core_s(self) -> list[float]:
        """Tick time less the adapters' time: forecast, guard, policy, metrics."""
        return [t - p - k - s for t, p, k, s in
                zip(self.tick_s, self.prom_s, self.kube_s, self.status_s, strict=True)]

    def check(self) -> None:
        """Raise ``AssertionError`` unless every tick decided, without error, on a model."""
        n = self.targets * self.rounds
        assert len(self.tick_s) == n, (len(self.tick_s), n)
        assert not self.errors, f"{len(self.errors)} tick errors, e.g. {self.errors[:3]}"
        assert self.decisions == n, f"{self.decisions} decisions in {n} ticks"
        assert len(self.refit_s) == self.targets, "not every target was refitted"
        assert self.forecasts == n, f"{self.forecasts} forecasts in {n} ticks"
        if self.rounds >= 4:  # a new bucket every 4th tick reaches the model
            assert self.model_updates >= self.targets * (self.rounds // 4), self.model_updates


def build_in_memory(slices: Sequence[Series], model: str, history: str,
                    metrics: ControllerMetrics | None) -> list[Target]:
    """A runner per slice, with an in-memory source and pod reader."""
    spec = make_spec(model, history)
    out = []
    for i, s in enumerate(slices):
        prom, kube, status = Stopwatch(), Stopwatch(), Stopwatch()
        r = TargetRunner(f"bench/t{i}", spec, TimedSource(ReplaySource(s), prom),
                         TimedPods(MemPods(), kube), metrics=metrics)
        out.append(Target(r, prom, kube, status))
    return out


def run_loop(targets: Sequence[Target], model: str, now0: float, rounds: int, *,
             warmup: int = 1, refit: bool = True) -> LoopResult:
    """Refit every target at ``now0`` (timed; skipped when not ``refit``), run ``warmup``
    untimed rounds, then ``rounds`` timed rounds of one tick per target, ``now`` advancing
    15 s per round."""
    res = LoopResult(model, len(targets), rounds)
    parts = ("prom", "kube", "status")
    for t in targets if refit else ():
        t0 = time.perf_counter()
        ok = t.runner.refit(now0)
        res.refit_s.append(time.perf_counter() - t0)
        if not ok:
            res.errors.append(f"{t.runner.key}: refit failed: {t.runner.live.last_error}")
    for k in range(warmup + rounds):
        now = now0 + INTERVAL_S * k
        timed = k >= warmup
        if timed and k == warmup:  # count adapter CPU and calls over the timed rounds only
            base_cpu = {p: sum(getattr(t, p).cpu_s for t in targets) for p in parts}
            base_calls = {p: sum(getattr(t, p).calls for t in targets) for p in parts}
        for t in targets:
            live = t.runner.live
            fed0 = live._fed_until_s
            p0, k0, s0 = t.prom.s, t.kube.s, t.status.s
            c0 = time.thread_time()
            w0 = time.perf_counter()
            out = t.runner.tick(now)
            wall = time.perf_counter() - w0
            cpu = time.thread_time() - c0
            if not timed:
                continue
            res.tick_s.append(wall)
            res.cpu_s.append(cpu)
            res.prom_s.append(t.prom.s - p0)
            res.kube_s.append(t.kube.s - k0)
            res.status_s.append(t.status.s - s0)
            res.decisions += out.decision is not None
            if out.decision is not None:
                d = out.decision
                res.decided.append((d.active, d.warm, d.reason.value))
            res.forecasts += out.forecast is not None
            res.predictions_used += out.prediction_used
            res.applied += out.applied
            updated = live.fitted is not None and live._fed_until_s > fed0
            res.new_bucket.append(updated)
            res.model_updates += updated
            res.errors.extend(f"{t.runner.key}@{now:.0f}: {e}" for e in out.errors)
    if rounds:
        for p in parts:
            res.adapter_cpu_s[p] = sum(getattr(t, p).cpu_s for t in targets) - base_cpu[p]
            res.calls[p] = sum(getattr(t, p).calls for t in targets) - base_calls[p]
    return res


# ----------------------------------------------------------------------------- reports
def ms(xs: Sequence[float], q: float | None = None) -> str:
    if not xs:
        return "-"
    v = statistics.fmean(xs) if q is None else float(np.percentile(xs, q))
    return f"{v * 1e3:.2f}"


def per_core(mean_s: float) -> str:
    return f"{INTERVAL_S / mean_s:,.0f}" if mean_s > 0 else "-"


def table_excluded(results: Sequence[LoopResult], history: str) -> None:
    print(f"\n### 1. Tick cost, fetch excluded (in-memory source and pods; {history} of "
          "1-min history)\n")
    print("| model | targets | ticks | mean (ms) | p50 (ms) | p99 (ms) | max (ms) "
          "| new-bucket ticks (ms) | other ticks (ms) | prediction used "
          "| targets / core / 15 s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        mean = statistics.fmean(r.tick_s)
        upd = [t for t, u in zip(r.tick_s, r.new_bucket, strict=True) if u]
        rest = [t for t, u in zip(r.tick_s, r.new_bucket, strict=True) if not u]
        print(f"| {r.model} | {r.targets} | {len(r.tick_s)} | {mean * 1e3:.2f} "
              f"| {ms(r.tick_s, 50)} | {ms(r.tick_s, 99)} | {max(r.tick_s) * 1e3:.2f} "
              f"| {ms(upd)} | {ms(rest)} | {r.predictions_used / len(r.tick_s):.0%} "
              f"| {per_core(mean)} |")


def table_refit(results: Sequence[LoopResult], history: str, big: int = 500) -> None:
    print(f"\n### Refit cost (history fetch from memory + fit; {history} of 1-min history)\n")
    print(f"| model | refits | mean (s) | p50 (s) | max (s) | refits / core / hour "
          f"| core share for {big} targets at refitEvery 1h |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        mean = statistics.fmean(r.refit_s)
        print(f"| {r.model} | {len(r.refit_s)} | {mean:.3f} "
              f"| {np.percentile(r.refit_s, 50):.3f} | {max(r.refit_s):.3f} "
              f"| {3600 / mean:,.0f} | {big * mean / 3600:.1%} |")


def table_included(results: Sequence[LoopResult], history: str) -> None:
    print(f"\n### 2. Tick cost, fetch included (real Prometheus + fake API server over HTTP; "
          f"{history} of history)\n")
    print("Per tick: wall ms, and [client CPU ms of the ticking thread (adapter method calls)].\n")
    print("| model | targets | ticks | wall mean | p50 | p99 | Prometheus "
          "| Kubernetes | status write | core | thread CPU "
          "| targets / 15 s, 1 worker (wall) | targets / core / 15 s (I/O in threads: CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        wall = statistics.fmean(r.tick_s)
        cpu = statistics.fmean(r.cpu_s)
        n = len(r.tick_s)
        pc = {p: f"{ms([v / n])} ({r.calls.get(p, 0) / n:.1f} calls)"
              for p, v in r.adapter_cpu_s.items()}
        core_cpu = cpu - sum(r.adapter_cpu_s.values()) / n
        print(f"| {r.model} | {r.targets} | {n} | {wall * 1e3:.2f} "
              f"| {ms(r.tick_s, 50)} | {ms(r.tick_s, 99)} | {ms(r.prom_s)} [{pc['prom']}] "
              f"| {ms(r.kube_s)} [{pc['kube']}] | {ms(r.status_s)} [{pc['status']}] "
              f"| {ms(r.core_s)} [{core_cpu * 1e3:.2f}] | {cpu * 1e3:.2f} "
              f"| {per_core(wall)} | {per_core(cpu)} |")


# ----------------------------------------------------------------------------- part 1
def bench_excluded(trace: Series, targets: int, rounds: int, models: Sequence[str],
                   history: str) -> list[LoopResult]:
    """Part 1 for each model (see the module docstring)."""
    hist_s = parse_duration(history)
    slices = target_slices(trace, targets, hist_s, (rounds + 2) * INTERVAL_S, NOW0)
    out = []
    for model in models:
        tg = build_in_memory(slices, model, history, ControllerMetrics())
        gc.collect()
        res = run_loop(tg, model, NOW0, rounds)
        res.check()
        out.append(res)
        del tg
    return out


def profile_ticks(trace: Series, targets: int, rounds: int, model: str,
                  history: str) -> str:
    """cProfile of the timed rounds of part 1 (top functions by own and cumulative time)."""
    hist_s = parse_duration(history)
    slices = target_slices(trace, targets, hist_s, (rounds + 2) * INTERVAL_S, NOW0)
    tg = build_in_memory(slices, model, history, ControllerMetrics())
    for t in tg:
        t.runner.refit(NOW0)
    prof = cProfile.Profile()
    prof.enable()
    run_loop(tg, model, NOW0 + INTERVAL_S, rounds, warmup=0, refit=False)
    prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("cumulative").print_stats(25)
    st.sort_stats("tottime").print_stats(15)
    return buf.getvalue()


# ----------------------------------------------------------------------------- part 3
def bench_memory(trace: Series, targets: int, models: Sequence[str],
                 histories: Sequence[str]) -> list[tuple[str, str, float, float]]:
    """``(model, history, KiB per target, peak KiB per target)`` after refit + 8 ticks."""
    out = []
    metrics = ControllerMetrics()
    for history in histories:
        hist_s = parse_duration(history)
        slices = target_slices(trace, targets, hist_s, 12 * INTERVAL_S, NOW0)
        for model in models:
            gc.collect()
            tracemalloc.start()
            base, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            tg = build_in_memory(slices, model, history, metrics)
            res = run_loop(tg, model, NOW0, 8)
            res.check()
            gc.collect()
            cur, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            out.append((model, history, (cur - base) / targets / 1024,
                        (peak - base) / targets / 1024))
            del tg, res
    return out


def table_memory(rows: Sequence[tuple[str, str, float, float]], targets: int) -> None:
    print(f"\n### 3. Memory per target (tracemalloc, {targets} runners, after refit + 9 "
          "ticks; 1-min history)\n")
    print("| model | history | buckets | KiB / target | peak KiB / target (during refits) "
          "| MiB for 500 targets |")
    print("|---|---|---:|---:|---:|---:|")
    for model, history, kib, peak in rows:
        n = int(parse_duration(history) // STEP_S)
        print(f"| {model} | {history} | {n:,} | {kib:,.0f} | {peak:,.0f} "
              f"| {kib * 500 / 1024:,.0f} |")


# ----------------------------------------------------------------------------- part 2
@dataclass
class PromCluster:
    """Prometheus + fake API server holding ``n`` targets' data and objects."""

    prom_url: str
    api: Any
    now0: float
    namespace: str = "bench"


def backfill_series(slices: Sequence[Series], now0: float, span_s: float) -> list[Any]:
    """Per target: a requests counter at a 15-s scrape over the whole slice (the history),
    and token counters and worker gauges over the ticks' window only."""
    from prom_fixture import BackfillSeries

    out = []
    scrape = 15.0
    per = int(STEP_S // scrape)
    for i, s in enumerate(slices):
        lab = {"target": f"t{i}", "namespace": "bench"}
        rps = np.asarray(s.values, dtype=np.float64)
        # each minute's requests spread over its 15-s scrapes (NaN minutes: no samples)
        inc = np.repeat(rps * STEP_S / per, per)
        ts = s.start_s + scrape * np.arange(len(inc), dtype=np.float64) + scrape
        out.append(BackfillSeries("surgecast_worker_requests", "counter", ts, inc,
                                  {**lab, "status": "200"}))
        win = (ts >= now0 - 600.0) & (ts <= now0 + span_s + 120.0)
        tw, iw = ts[win], np.nan_to_num(inc[win], nan=0.0)
        out.append(BackfillSeries("surgecast_worker_prompt_tokens", "counter", tw, iw * 350.0,
                                  lab))
        out.append(BackfillSeries("surgecast_worker_generation_tokens", "counter", tw,
                                  iw * 180.0, lab))
        out.append(BackfillSeries("surgecast_worker_num_requests_waiting", "gauge", tw,
                                  np.round(iw / 4), lab))
        out.append(BackfillSeries("surgecast_worker_num_requests_running", "gauge", tw,
                                  np.minimum(iw, 32.0), lab))
        out.append(BackfillSeries("surgecast_worker_gpu_utilization_ratio", "gauge", tw,
                                  np.clip(iw / 40.0, 0.0, 1.0), lab))
    return out


def bench_included(trace: Series, targets: int, rounds: int, models: Sequence[str],
                   history: str) -> list[LoopResult]:
    """Part 2 for each model (see the module docstring)."""
    from fake_kube import FakeKube
    from kubernetes import client as k8s
    from prom_fixture import find_binaries, running_prometheus

    from autoscaler.adapters.kubernetes import KubernetesActuator
    from autoscaler.adapters.prometheus import PrometheusSource, preset
    from autoscaler.config import crd
    from autoscaler.controller.status import GROUP, PLURAL, VERSION, StatusWriter

    if find_binaries() is None:
        raise FileNotFoundError("prometheus/promtool not on PATH (make system-deps)")
    hist_s = parse_duration(history)
    span_s = (rounds + 2) * INTERVAL_S
    # placed in the past (Prometheus evaluates at the simulated now); 5 s past a minute
    now0 = (math.floor(time.time() / STEP_S) - 180 - math.ceil(span_s / STEP_S)) * STEP_S + 5.0
    slices = target_slices(trace, targets, hist_s, span_s, now0)
    queries = preset("surgecast", gpu="worker")
    ns = "bench"
    results = []
    with tempfile.TemporaryDirectory(prefix="surgecast-bench-") as tmp:
        t0 = time.perf_counter()
        series = backfill_series(slices, now0, span_s)
        with running_prometheus(Path(tmp) / "data", backfill=series) as server, \
                FakeKube(ready_delay_s=0.0) as kube:
            print(f"(Prometheus backfilled with {len(series)} series for {targets} targets "
                  f"and started in {time.perf_counter() - t0:.1f} s)", file=sys.stderr)
            probe = PrometheusSource(server.url)
            last = f'sum(surgecast_worker_requests_total{{target="t{targets - 1}"}})'
            v, _ = probe.query_at(last, now0)
            assert v > 0, "backfilled counter not readable at the simulated now"
            api = kube.api_client()
            k8s.ApiextensionsV1Api(api).create_custom_resource_definition(crd())
            objs = k8s.CustomObjectsApi(api)
            writer = StatusWriter(api)
            for model in models:
                metrics = ControllerMetrics()  # one per controller process, as in the loop
                spec = make_spec(model, history)
                tg = []
                for i in range(targets):
                    name = f"w{i}-{model.replace('_', '-')}"
                    kube.add_deployment(ns, name, replicas=2)
                    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PredictiveAutoscaler",
                            "metadata": {"name": name, "namespace": ns},
                            "spec": spec_body(model, history, name)}
                    objs.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
                    src = PrometheusSource(server.url, queries=queries,
                                           selector=f'target="t{i}"', timeout_s=10.0)
                    act = KubernetesActuator(api, ns, name, sleep=lambda s: None)
                    prom, kw, sw = Stopwatch(), Stopwatch(), Stopwatch()

                    def write(st: dict[str, Any], _n: str = name,
                              _w: Stopwatch = sw) -> str | None:
                        out: str | None = _w.time(writer.write, ns, _n, st)
                        return out

                    r = TargetRunner(f"{ns}/{name}", spec, TimedSource(src, prom),
                                     TimedPods(act, kw), write_status=write,
                                     metrics=metrics)
                    tg.append(Target(r, prom, kw, sw))
                res = run_loop(tg, model, now0, rounds)
                res.check()
                bad = [t.runner.key for t in tg
                       if t.runner.last is None or t.runner.last.signals.tokens_per_s is None]
                assert not bad, f"tokens/s missing for {bad[:3]}: queries did not match"
                results.append(res)
    return results


# ----------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    ap.add_argument("--targets", type=int, default=None, help="targets in part 1")
    ap.add_argument("--rounds", type=int, default=None, help="timed ticks per target")
    ap.add_argument("--models", default="seasonal_naive,ets",
                    help="comma-separated registry names (e.g. add gbm)")
    ap.add_argument("--history", default="7d", help="history for parts 1 (CRD default 7d)")
    ap.add_argument("--prom-targets", type=int, default=None, help="targets in part 2")
    ap.add_argument("--prom-history", default="1d",
                    help="history in part 2 (the tick only fetches new buckets)")
    ap.add_argument("--mem-targets", type=int, default=None, help="runners in part 3")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: 1,2,3")
    ap.add_argument("--profile", metavar="MODEL", help="only print a cProfile of part 1")
    args = ap.parse_args(argv)
    logging.getLogger("autoscaler").setLevel(logging.ERROR)  # guard switches: not news here
    trace = load_trace()
    return _run(args, trace)


def _run(args: argparse.Namespace, trace: Series) -> int:
    quick = args.quick
    targets = args.targets or (30 if quick else 200)
    rounds = args.rounds or (12 if quick else 40)
    prom_targets = args.prom_targets or (8 if quick else 50)
    mem_targets = args.mem_targets or (5 if quick else 20)
    models = [m for m in args.models.split(",") if m]
    skip = set(args.skip.split(","))
    if args.profile:
        print(profile_ticks(trace, targets, rounds, args.profile, args.history))
        return 0
    print(f"controller loop benchmark: trace {TRACE} (1 min), models {', '.join(models)}, "
          f"interval {INTERVAL_S:g} s, {'quick' if quick else 'full'} run")
    if "1" not in skip:
        res = bench_excluded(trace, targets, rounds, models, args.history)
        table_excluded(res, args.history)
        table_refit(res, args.history)
    if "2" not in skip:
        res2 = bench_included(trace, prom_targets, rounds, models, args.prom_history)
        table_included(res2, args.prom_history)
    if "3" not in skip:
        rows = bench_memory(trace, mem_targets, models, ("7d", "3d"))
        table_memory(rows, mem_targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
