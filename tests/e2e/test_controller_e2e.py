"""End to end in one process tree: a real trace replayed by worker-like exporters (the
worker's metric names, prometheus_client over HTTP) -> a real Prometheus scraping them
(with days of the same trace backfilled by promtool) -> the controller loop (watching a
PredictiveAutoscaler on the fake API server) -> the fake API server's Deployment.

Time is compressed so the test takes two minutes: one day of the NASA 1995 trace (1-min
buckets) plays in one hour, one trace minute every 2.5 s; the controller forecasts on a 10-s
grid (4 trace minutes), so the trace's daily season is a 1-h season the forecaster detects.
The replay starts just before a morning ramp that also happened the day before (chosen
from the trace, not hard-coded), with a 40-s cold start.

Asserted: replicas rise *before* the replayed peak, above what the reactive rule would
have asked for from the demand then visible, and never fall while Prometheus is frozen
(SIGSTOP: queries time out), and the controller reports the outage in its conditions.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_kube import FakeKube
from kubernetes import client as k8s
from prom_fixture import BackfillSeries, PrometheusServer, find_binaries, running_prometheus

from autoscaler.adapters.kubernetes import KubernetesActuator
from autoscaler.adapters.prometheus import PrometheusSource
from autoscaler.config import crd, source_kwargs
from autoscaler.controller.loop import Controller, TargetKey
from autoscaler.controller.metrics import ControllerMetrics
from autoscaler.controller.status import GROUP, PLURAL, VERSION
from autoscaler.core.prediction_guard import GuardSettings
from forecasting.series import Series

NS, DEP, PA = "llm", "worker", "worker-pa"
MINUTE_S = 2.5  # one trace minute, compressed
BUCKET = 4  # trace minutes per forecast bucket (10 s)
DAY = 1440 // BUCKET  # buckets per compressed day (1 h)
HISTORY_DAYS = 6
PODS = 2
COLD_START_S = 40.0
REPLAY_BUCKETS = 10
TARGET_UTIL = 0.7
PEAK_REPLICAS = 40


def pick_ramp(x4: np.ndarray) -> int:
    """The bucket before the strongest morning ramp that also happened the day before:
    maximises min(today, yesterday) of mean(next 5-8 buckets) / mean(last 4 buckets)."""
    best, at = -1.0, -1
    for d in range(HISTORY_DAYS + 1, len(x4) // DAY - 1):
        for m in range(8, DAY - 20):
            i = d * DAY + m
            ratios = []
            for j in (i, i - DAY):
                before, after = x4[j - 3: j + 1].mean(), x4[j + 5: j + 9].mean()
                ratios.append(after / max(before, 1.0) if after - before >= 50 else 0.0)
            if min(ratios) > best:
                best, at = min(ratios), i
    assert best > 1.5, "no ramp found in the trace"
    return at


@dataclass
class Replay:
    """The trace on the wall clock: trace minute ``m`` happens at ``t0 + (m - m0) * 2.5``."""

    minutes: np.ndarray  # requests per trace minute
    m0: int  # first replayed minute
    t0: float  # wall time of m0

    def cumulative(self, t: float) -> float:
        """Requests replayed from ``t0`` to ``t`` (linear within a minute)."""
        p = (t - self.t0) / MINUTE_S
        if p <= 0:
            return 0.0
        k = int(p)
        whole = float(self.minutes[self.m0: self.m0 + k].sum())
        return whole + (p - k) * float(self.minutes[self.m0 + k])

    def rate(self, t: float) -> float:
        """True demand (req/s) at wall time ``t``."""
        m = self.m0 + math.floor((t - self.t0) / MINUTE_S)
        return float(self.minutes[m]) / MINUTE_S


class Exporters:
    """``PODS`` worker-like exporters (own registries, worker metric names) replaying the
    trace, each carrying an equal share of the requests."""

    def __init__(self, replay: Replay, start_totals: float) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.replay = replay
        self.servers: list[Any] = []
        self.counters: list[Any] = []
        self.ports: list[int] = []
        for _ in range(PODS):
            reg = CollectorRegistry()
            # status="200", as the worker labels what it serves (the preset counts by status)
            c = Counter("surgecast_worker_requests", "requests", ["status"],
                        registry=reg).labels("200")
            Gauge("surgecast_worker_num_requests_waiting", "waiting", registry=reg).set(0)
            c.inc(start_totals / PODS)
            server, thread = start_http_server(0, addr="127.0.0.1", registry=reg)
            self.servers.append((server, thread))
            self.counters.append(c)
            self.ports.append(server.server_port)
        self._done = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            total = self.replay.cumulative(time.time())
            delta = total - self._done
            if delta > 0:
                for c in self.counters:
                    c.inc(delta / PODS)
                self._done = total

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for server, thread in self.servers:
            server.shutdown()
            server.server_close()
            thread.join(5)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory,
          load_trace: Callable[[str], Series]) -> Iterator[dict[str, Any]]:
    if find_binaries() is None:
        pytest.skip("prometheus/promtool not found on PATH: run `make system-deps` (Debian)")
    minutes = np.nan_to_num(np.asarray(load_trace("nasa_http_1995").values, dtype=float))
    n4 = len(minutes) // BUCKET
    x4 = minutes[: n4 * BUCKET].reshape(-1, BUCKET).sum(axis=1)
    ramp = pick_ramp(x4)
    m0 = ramp * BUCKET - 3  # the ramp's reference bucket starts 7.5 s into the replay
    t0 = time.time() + 1.0
    replay = Replay(minutes, m0, t0)
    # backfill: HISTORY_DAYS compressed days before m0, one sample per trace minute
    first = m0 - HISTORY_DAYS * 1440
    hist = minutes[first:m0]
    ts = t0 - MINUTE_S * np.arange(len(hist), 0, -1, dtype=float)
    start_totals = float(hist.sum())
    exporters = Exporters(replay, start_totals)
    targets = [f"127.0.0.1:{p}" for p in exporters.ports]
    backfill = [
        BackfillSeries("surgecast_worker_requests", "counter", ts, hist / PODS,
                       {"job": "live", "instance": t, "status": "200"})
        for t in targets
    ]
    storage = tmp_path_factory.mktemp("e2e-prom") / "data"
    exporters.start()
    try:
        with running_prometheus(storage, backfill=backfill, scrape_targets=targets) as prom:
            # peak demand anywhere in what the controller will see sets the capacity
            peak_rps = float(x4[ramp - HISTORY_DAYS * DAY: ramp + REPLAY_BUCKETS].max()) / (
                BUCKET * MINUTE_S)
            yield {"prom": prom, "replay": replay, "x4": x4, "ramp": ramp,
                   "capacity": peak_rps / (PEAK_REPLICAS * TARGET_UTIL)}
    finally:
        exporters.close()


def pa(capacity: float) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "PredictiveAutoscaler",
        "metadata": {"name": PA, "namespace": NS},
        "spec": {
            "scaleTargetRef": {"name": DEP},
            "minReplicas": 1, "maxReplicas": 80,
            "warmPool": {"minReplicas": 0, "maxReplicas": 0},
            "signals": {"preset": "surgecast", "gpu": "none", "selector": 'job="live"',
                        "window": "15s"},
            "forecast": {"model": "seasonal_naive", "quantile": 0.9,
                         "history": f"{HISTORY_DAYS}h", "step": "10s", "refitEvery": "1h"},
            "capacity": {"requestsPerSecondPerReplica": round(capacity, 4),
                         "targetUtilization": TARGET_UTIL},
            "leadTime": {"mode": "Fixed", "coldStart": f"{COLD_START_S:g}s",
                         "warmPromotion": "2s"},
            "interval": "2s",
        },
    }


def test_replicas_rise_before_the_replayed_peak_and_hold_through_an_outage(
        world: dict[str, Any]) -> None:
    prom: PrometheusServer = world["prom"]
    replay: Replay = world["replay"]
    x4, ramp, capacity = world["x4"], world["ramp"], world["capacity"]
    per_pod = capacity * TARGET_UTIL
    with FakeKube() as kube:
        api = kube.api_client()
        k8s.ApiextensionsV1Api(api).create_custom_resource_definition(crd())
        kube.add_deployment(NS, DEP, replicas=1)
        k8s.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                                  pa(capacity))

        def source(key: TargetKey, spec: Any) -> PrometheusSource:
            return PrometheusSource(prom.url, **source_kwargs(spec), timeout_s=1.0,
                                    max_staleness_s=20.0)

        metrics = ControllerMetrics()
        # the guard's window counts ticks; at a 2-s tick, 40 scores are 80 s, too few for
        # noisy 1-min data compressed 24x, so score over as many ticks as a real 10 min
        ctl = Controller(source, lambda ns, d: KubernetesActuator(api, ns, d),
                         api_client=api, metrics=metrics,
                         guard=GuardSettings(window=300, min_samples=150))
        seen: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.25):
                dep = kube.objects[("deployments", NS, DEP)]
                seen.append((time.time(), int(dep["spec"]["replicas"])))

        sampler = threading.Thread(target=sample, daemon=True)
        ctl.start()
        sampler.start()
        try:
            key = TargetKey(NS, PA)
            # the replayed peak: the highest bucket of the replay window
            k_peak = int(np.argmax(x4[ramp: ramp + REPLAY_BUCKETS]))
            t_ref = replay.t0 + 3 * MINUTE_S  # wall time of the ramp's reference bucket
            t_peak = t_ref + k_peak * BUCKET * MINUTE_S
            need_peak = math.ceil(x4[ramp + k_peak] / (BUCKET * MINUTE_S) / per_pod)
            time.sleep(max(0.0, t_peak + 5 - time.time()))
            runner = ctl.runners[key]
            assert runner.live.fitted is not None, runner.live.last_error
            assert runner.ticks > 10
            # -- one cold start before the peak, capacity for it was already ordered
            check_at = t_peak - COLD_START_S
            before = [r for t, r in seen if t <= check_at]
            assert before, "no samples before the peak"
            ahead = max(before)
            # what the reactive rule could ask for from the demand visible by then
            visible = max(replay.rate(t) for t in np.arange(replay.t0, check_at - 5.0, 1.0))
            reactive_need = math.ceil(visible / per_pod)
            print(f"\nneed at peak {need_peak}, reactive by t_peak-40 s {reactive_need}, "
                  f"replicas by then {ahead} (ramp bucket {ramp}, peak +{k_peak})")
            assert ahead > reactive_need
            assert ahead >= need_peak
            status = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, NS, PLURAL, PA)["status"]
            conds = {c["type"]: c for c in status["conditions"]}
            assert conds["PredictionReady"]["status"] == "True", conds
            assert status["lastDecision"]["predictionUsed"] is True
            # -- Prometheus freezes: queries time out; replicas must not fall
            r0 = seen[-1][1]
            t_out = time.time()
            assert prom.proc is not None
            os.kill(prom.proc.pid, signal.SIGSTOP)
            try:
                # Ready turns False once failureThreshold (3) ticks in a row have failed
                # (2-s ticks, 1-s query timeouts): not on the first, so a flapping signal
                # does not flap the condition
                deadline = time.time() + 30
                while (time.time() < deadline
                       and conds_now(ctl, key)["Ready"] != ("False", "MetricsUnavailable")):
                    time.sleep(0.5)
                assert conds_now(ctl, key)["Ready"] == ("False", "MetricsUnavailable")
                assert time.time() - t_out >= 4.0  # not before a few failed ticks
                during = [r for t, r in seen if t >= t_out]
                assert during and min(during) >= r0
            finally:
                os.kill(prom.proc.pid, signal.SIGCONT)
            deadline = time.time() + 20
            while time.time() < deadline and conds_now(ctl, key)["Ready"][0] != "True":
                time.sleep(0.5)
            assert conds_now(ctl, key)["Ready"][0] == "True"
            body, _ = metrics.render()
            assert b'surgecast_controller_errors_total{kind="MetricsUnavailable"' in body \
                or b'kind="MetricsUnavailable"' in body
        finally:
            stop.set()
            ctl.stop()
        assert ctl.internal_errors == 0


def conds_now(ctl: Controller, key: TargetKey) -> dict[str, tuple[str, str]]:
    st = ctl.runners[key].conditions
    return {t: (st.status_of(t) or "", st.reason_of(t) or "")
            for t in ("Ready", "PredictionReady", "FallbackActive")}


def test_trace_ramp_is_real() -> None:
    """The ramp picker works on a real trace's shape, not on a constant."""
    flat = np.full(DAY * 10, 50.0)
    with pytest.raises(AssertionError):
        pick_ramp(flat)
    assert Path(__file__).exists()
