"""Online capacity refinement in the live controller: a real Prometheus holds the worker's
metrics (backfilled at known rates), the fake API server holds its pods, and
``TargetRunner.tick(now_s)`` runs on the backfilled times.

Four active pods serve 20 req/s (2xx) with 8 requests waiting: saturated, so each tick with
the pods unchanged for the 1m rate window plus one interval (75 s; the controller cannot
know for how long they were steady before it started) folds 20 / 4 = 5 req/s per pod into
the configured 10 (exponential smoothing, weight 0.2). Without a throughput series nothing
changes. A fleet whose queue grows reads the growth as demand and as arriving in the drain.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fake_kube import FakeKube
from prom_fixture import BackfillSeries, find_binaries, running_prometheus

from autoscaler.adapters.kubernetes import ROLE_LABEL, KubernetesActuator
from autoscaler.adapters.prometheus import PrometheusSource
from autoscaler.config import source_kwargs, validate_spec
from autoscaler.controller.metrics import ControllerMetrics
from autoscaler.controller.target import TargetRunner, TickOutcome

NS, DEP = "llm", "worker"
PODS, SERVED_RPS, REFUSED_RPS, WAITING = 4, 20.0, 5.0, 8.0
GROWTH_RPS = 10.0
CONFIGURED_RPS = 10.0
TICKS = 12
#: ticks before the first refinement: 75 s (window 1m + interval 15s) at 15 s a tick
SETTLE_TICKS = 5


@pytest.fixture(scope="module")
def prom_at(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, float]]:
    """A real Prometheus with three fleets backfilled every 15 s; yields its URL and the
    first tick's time. ``saturated`` serves 20 req/s and refuses 5 (429); ``refusing``
    refuses all 25, so it has no 2xx series at all. Both have 8 requests waiting.
    ``growing`` serves 20 req/s while its queue gains 10 a second."""
    if find_binaries() is None:
        pytest.skip("prometheus/promtool not found on PATH: run `make system-deps` (Debian)")
    t0 = math.floor(time.time() / 60) * 60 - 3 * 3600.0
    ts = np.arange(t0 - 900.0, t0 + 15.0 * TICKS + 300.0, 15.0)

    def counter(status: str, rps: float, fleet: str) -> BackfillSeries:
        return BackfillSeries("surgecast_worker_requests", "counter", ts,
                              np.full_like(ts, rps * 15.0), {"status": status, "fleet": fleet})

    backfill = [
        counter("200", SERVED_RPS, "saturated"),
        counter("429", REFUSED_RPS, "saturated"),
        counter("429", SERVED_RPS + REFUSED_RPS, "refusing"),
        *(BackfillSeries("surgecast_worker_num_requests_waiting", "gauge", ts,
                         np.full_like(ts, WAITING), {"fleet": fleet})
          for fleet in ("saturated", "refusing")),
        counter("200", SERVED_RPS, "growing"),
        BackfillSeries("surgecast_worker_num_requests_waiting", "gauge", ts,
                       WAITING + GROWTH_RPS * (ts - ts[0]), {"fleet": "growing"}),
    ]
    storage = tmp_path_factory.mktemp("prom-capacity") / "data"
    with running_prometheus(storage, backfill=backfill) as server:
        yield server.url, t0


def spec(fleet: str = "saturated", **over: Any) -> Any:
    base: dict[str, Any] = {
        "scaleTargetRef": {"name": DEP},
        "minReplicas": 1, "maxReplicas": 20,
        "signals": {"preset": "surgecast", "gpu": "none", "selector": f'fleet="{fleet}"'},
        "capacity": {"requestsPerSecondPerReplica": CONFIGURED_RPS},
        "forecast": {"model": "seasonal_naive", "history": "1d", "step": "1m"},
        # Observe: decisions are made and reported, the pods stay as they are (a scale-up
        # would pause the refinement until the new pods are Ready)
        "mode": "Observe",
        "interval": "15s",
    }
    base.update(over)
    return validate_spec(base)


def runner(kube: FakeKube, url: str, sp: Any, metrics: ControllerMetrics | None = None,
           ) -> TargetRunner:
    act = KubernetesActuator(kube.api_client(), NS, DEP, sleep=lambda s: None)
    src = PrometheusSource(url, **source_kwargs(sp))
    return TargetRunner(f"{NS}/pa", sp, src, act, metrics=metrics)


def ticks(r: TargetRunner, t0: float, n: int = TICKS, first: int = 0) -> list[TickOutcome]:
    outs = [r.tick(t0 + 15.0 * (first + k)) for k in range(n)]
    assert all(o.decision is not None for o in outs)
    return outs


def rps_per_replica(out: TickOutcome) -> float:
    assert out.decision is not None
    return out.decision.components["rps_per_replica"]


def test_saturated_pods_refine_the_capacity_and_the_next_decision_uses_it(
        kube: FakeKube, prom_at: tuple[str, float]) -> None:
    url, t0 = prom_at
    kube.add_deployment(NS, DEP, replicas=PODS, pod_labels={ROLE_LABEL: "active"})
    m = ControllerMetrics()
    r = runner(kube, url, spec(), m)
    outs = ticks(r, t0)
    first = outs[0]
    assert first.signals.throughput_rps == pytest.approx(SERVED_RPS), first.signals.errors
    assert first.signals.queue_depth == WAITING and first.signals.pods.active == PODS
    # the first tick has no previous pod count to compare with: it plans as configured,
    # and 25 req/s on 4 pods at 10 x 0.7 is within the HPA's tolerance
    assert rps_per_replica(first) == CONFIGURED_RPS
    assert first.decision is not None and first.decision.total == PODS
    for out in outs[1:SETTLE_TICKS]:  # the rate window may still count other pods
        assert rps_per_replica(out) == CONFIGURED_RPS
    est = CONFIGURED_RPS
    for out in outs[SETTLE_TICKS:]:  # each tick moves toward 20 / 4 = 5 req/s per pod
        est = 0.8 * est + 0.2 * SERVED_RPS / PODS
        assert rps_per_replica(out) == pytest.approx(est)
    last = outs[-1].decision
    assert last is not None
    demand = SERVED_RPS + REFUSED_RPS
    # the decision plans with the refined capacity: the HPA rule at 6.05 req/s x 0.7
    assert last.total == math.ceil(demand / (est * 0.7)) == 6 > first.decision.total
    assert f"capacity {est:.2f} req/s per replica (configured 10, refined from " \
           f"{TICKS - SETTLE_TICKS} saturated ticks)" in last.message
    st = r.status()
    assert st["capacity"] == {"configuredRpsPerReplica": CONFIGURED_RPS,
                              "rpsPerReplica": round(est, 4), "samples": TICKS - SETTLE_TICKS}
    assert st["lastDecision"]["throughputRps"] == pytest.approx(SERVED_RPS)
    got = m.registry.get_sample_value("surgecast_controller_capacity_requests_per_second",
                                      {"target": f"{NS}/pa"})
    assert got == pytest.approx(est)
    assert m.registry.get_sample_value(
        "surgecast_controller_configured_capacity_requests_per_second",
        {"target": f"{NS}/pa"}) == CONFIGURED_RPS
    assert kube.objects[("deployments", NS, DEP)]["spec"]["replicas"] == PODS  # Observe

    # a spec edit elsewhere keeps the estimate; an edit of the capacity resets it to the
    # configured value, from which the next saturated tick refines again
    r.close()
    kept = runner(kube, url, spec(maxReplicas=30))
    kept.carry_from(r)
    assert kept.state.capacity is not None
    assert kept.state.capacity.rps == pytest.approx(est)
    assert kept.state.capacity.samples == TICKS - SETTLE_TICKS
    reset = runner(kube, url, spec(capacity={"requestsPerSecondPerReplica": 12}))
    reset.carry_from(r)
    assert reset.state.capacity is not None and reset.state.capacity.rps == 12.0
    (out,) = ticks(reset, t0, 1, first=TICKS)
    # 5 req/s per pod is below half the new configured 12: taken as 6, the bound
    assert rps_per_replica(out) == pytest.approx(0.8 * 12.0 + 0.2 * 6.0)
    assert reset.status()["capacity"]["configuredRpsPerReplica"] == 12.0
    assert reset.status()["capacity"]["samples"] == 1


@pytest.mark.parametrize("case", ["fleet-without-2xx", "override-matches-nothing"])
def test_without_a_throughput_series_nothing_changes(
        kube: FakeKube, prom_at: tuple[str, float], case: str) -> None:
    """Saturated pods whose throughput is missing (no 2xx series; or a
    ``signals.queries.throughputRps`` override that matches nothing) plan with the
    configured capacity: no refinement, no scale-down, no failure."""
    url, t0 = prom_at
    kube.add_deployment(NS, DEP, replicas=PODS, pod_labels={ROLE_LABEL: "active"})
    if case == "fleet-without-2xx":
        sp = spec("refusing")
    else:
        signals = {"preset": "surgecast", "gpu": "none", "selector": 'fleet="saturated"',
                   "queries": {"throughputRps":
                               "sum(rate(no_such_counter_total{$selector}[$window]))"}}
        sp = spec(signals=signals)
    r = runner(kube, url, sp)
    outs = ticks(r, t0)
    for out in outs:
        assert out.signals.throughput_rps is None
        assert "throughput_rps" in out.signals.errors
        assert out.signals.demand_rps == pytest.approx(SERVED_RPS + REFUSED_RPS)
        assert out.signals.queue_depth == WAITING
        assert rps_per_replica(out) == CONFIGURED_RPS
        assert out.decision is not None and out.decision.total == PODS
        assert "refined" not in out.decision.message
    st = r.status()
    assert st["capacity"] == {"configuredRpsPerReplica": CONFIGURED_RPS,
                              "rpsPerReplica": CONFIGURED_RPS, "samples": 0}
    assert st["lastDecision"]["throughputRps"] is None
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True"
    assert conds["FallbackActive"]["status"] == "False"


@pytest.mark.parametrize("demand", ["preset", "finished-only"])
def test_a_growing_queue_is_demand_and_the_drain_counts_it(
        kube: FakeKube, prom_at: tuple[str, float], demand: str) -> None:
    """Pods that finish 20 req/s while their queue gains 10 a second: the preset's demand
    (finished plus the queue's growth, evaluated by Prometheus) reads 30 req/s; a
    ``demandRps`` override that counts finished requests only reads 20. Either way, from
    the third tick (two sample intervals of growth) the drain term counts 20 + 10 as
    arriving, and the decision says so."""
    url, t0 = prom_at
    kube.add_deployment(NS, DEP, replicas=PODS, pod_labels={ROLE_LABEL: "active"})
    over: dict[str, Any] = {}
    if demand == "finished-only":
        over["signals"] = {
            "preset": "surgecast", "gpu": "none", "selector": 'fleet="growing"',
            "queries": {"demandRps":
                        "sum(rate(surgecast_worker_requests_total{$selector}[$window]))"}}
    r = runner(kube, url, spec("growing", **over))
    outs = ticks(r, t0, 4)
    seen = SERVED_RPS + (GROWTH_RPS if demand == "preset" else 0.0)
    for out in outs:
        assert out.signals.throughput_rps == pytest.approx(SERVED_RPS), out.signals.errors
        assert out.signals.demand_rps == pytest.approx(seen)
    for out in outs[:2]:
        assert out.decision is not None and "queue_growth_rps" not in out.decision.components
    for out in outs[2:]:
        d = out.decision
        assert d is not None
        assert d.components["queue_growth_rps"] == pytest.approx(GROWTH_RPS)
        q = out.signals.queue_depth
        assert q is not None
        want = math.ceil((SERVED_RPS + GROWTH_RPS + q / 60.0) / CONFIGURED_RPS - 1e-9)
        assert d.components["drain"] == want
        assert f"growing {GROWTH_RPS:.1f} req/s" in d.message
