"""Simulator: conservation, no peeking, oracle as a lower bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoscaler.core.baselines import REGISTRY, oracle_gpu_hours
from autoscaler.core.decision import Decision, Reason
from autoscaler.core.observation import DemandView
from autoscaler.core.signals import Signals
from autoscaler.core.simulator import SimConfig, demand_rates, simulate
from forecasting.series import Series


def surge(n_min: int = 60, lo: float = 300.0, hi: float = 2000.0) -> Series:
    v = np.full(n_min * 60, lo)
    v[len(v) // 2 :] = hi
    return Series(start_s=0.0, step_s=1.0, values=v, kind="count", absolute=False)


CFG = SimConfig(capacity_rps_per_replica=50.0, initial_replicas=9)


@pytest.mark.parametrize("name", ["hpa", "hpa_rps", "keda", "kpa"])
def test_conservation(name: str) -> None:
    res = simulate(surge(), REGISTRY[name](50.0), CFG)
    assert math.isclose(res.served.sum() + res.backlog[-1], res.arrivals, rel_tol=1e-9)
    assert res.under_provisioned_min > 0  # a reactive scaler cannot absorb a 6.7x surge at once


def test_static_peak_serves_everything_and_oracle_is_cheaper() -> None:
    s = surge()
    res = simulate(s, REGISTRY["static"](40), CFG)
    assert res.slo_share == 1.0 and res.p99_latency_s == CFG.base_latency_s
    rates = demand_rates(s, CFG.step_s).values
    orc = oracle_gpu_hours(
        rates, CFG.step_s, 50.0, CFG.cold_start_s * CFG.cold_start_min_ratio, initial_replicas=9
    )
    oracle_run = simulate(
        s, REGISTRY["oracle"](rates, 0.0, CFG.step_s, 50.0, max_cold_start_s=180.0), CFG
    )
    assert oracle_run.slo_share == 1.0
    for r in (res, oracle_run):
        assert orc <= r.gpu_hours
    assert orc < res.gpu_hours * 0.8


class Peeker:
    """Records what it was shown, to check the simulator hides the future."""

    name = "peeker"
    interval_s = 15.0

    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        self.seen.append((signals.now_s, view.end_s))
        return Decision(signals.pods.desired, 0, Reason.BASELINE)


def test_no_peeking_and_lagged_observation() -> None:
    p = Peeker()
    simulate(surge(10), p, CFG)
    assert all(end <= max(now - CFG.scrape_interval_s, 0.0) + 1e-9 for now, end in p.seen)
    assert len(p.seen) == 10 * 60 // 15


def test_pods_by_state_and_costs() -> None:
    res = simulate(surge(20), REGISTRY["hpa_rps"](50.0), CFG)
    assert res.starting.max() > 0
    pods = res.starting + res.warm + res.active + res.terminating
    assert math.isclose(res.gpu_hours, pods.sum() * CFG.step_s / 3600)


@pytest.mark.parametrize(("start_s", "n"), [(0.0, 92), (10.0, 100), (1_700_000_003.0, 92)])
def test_demand_rates_partly_covered_edge_buckets_average_what_they_have(
    start_s: float, n: int
) -> None:
    # one-second buckets on a 15 s grid: an edge bucket is covered less than half
    vals = np.arange(n, dtype=np.float64)
    s = Series(start_s=start_s, step_s=1.0, values=vals, kind="count", absolute=start_s > 1e9)
    r = demand_rates(s, 15.0)
    out = np.asarray(r.values)
    assert not np.isnan(out).any()
    assert r.start_s <= start_s and r.start_s + len(out) * 15.0 >= start_s + n
    # an edge bucket's rate is the mean of the seconds it covers
    last_start = r.start_s + (len(out) - 1) * 15.0
    assert out[-1] == pytest.approx(vals[round(last_start - start_s) :].mean())
    first_end = r.start_s + 15.0
    assert out[0] == pytest.approx(vals[: round(first_end - start_s)].mean())
    res = simulate(s, REGISTRY["static"](5), SimConfig(capacity_rps_per_replica=50.0, step_s=15.0))
    assert not np.isnan(res.latency_s).any()
