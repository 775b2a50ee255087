"""Simulator: conservation, no peeking, oracle as a lower bound; cold-start draws, warm
promotion, termination cost and the lagged rate() the autoscaler sees."""

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


class Script:
    """Asks for the (total, active) of the latest ``plan`` entry at or before each tick and
    records the signals it was shown."""

    name = "script"
    interval_s = 15.0

    def __init__(self, plan: list[tuple[float, int, int]]) -> None:
        self.plan = plan
        self.seen: list[Signals] = []

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        self.seen.append(signals)
        total, active = next((n, a) for t, n, a in reversed(self.plan) if t <= signals.now_s)
        return Decision(active, total - active, Reason.BASELINE)


def flat(minutes: int, rate: float = 10.0) -> Series:
    return Series(start_s=0.0, step_s=60.0, values=np.full(minutes, rate * 60.0), kind="count",
                  absolute=False)


def test_cold_starts_are_drawn_log_normal_clipped_and_seeded() -> None:
    cfg = SimConfig(capacity_rps_per_replica=50.0, step_s=5.0, initial_replicas=1,
                    cold_start_s=120.0, cold_start_sigma=0.3)

    def durations(seed: int) -> list[float]:
        s = Script([(0.0, 1, 1), (15.0, 301, 301)])
        simulate(flat(10), s, SimConfig(**{**cfg.__dict__, "seed": seed}))
        return [d for sig in s.seen for d in sig.ready_durations_s]

    d0 = durations(0)
    assert len(d0) == 300  # every pod reports its start once
    assert min(d0) >= 0.75 * 120 - 1e-9 and max(d0) <= 1.5 * 120 + 1e-9
    # a distribution, not a constant: median near 120 s, both clips reached at sigma 0.3
    assert np.median(d0) == pytest.approx(120.0, rel=0.06)
    assert np.mean(np.array(d0) <= 90 + 5) > 0.1 and np.mean(np.array(d0) >= 180 - 5) > 0.03
    assert durations(0) == d0 and durations(1) != d0


def test_a_warm_pod_serves_only_its_promotion_delay_after_promotion() -> None:
    cfg = SimConfig(capacity_rps_per_replica=50.0, step_s=1.0, initial_replicas=1,
                    cold_start_s=60.0, cold_start_sigma=0.0, warm_promotion_s=5.0)
    # one more pod at 0 s kept warm; promoted at 300 s
    res = simulate(flat(10), Script([(0.0, 2, 1), (300.0, 2, 2)]), cfg)
    t = np.arange(len(res.capacity_rps)) * cfg.step_s
    assert (res.warm[(t >= 61) & (t < 300)] == 1).all()  # ready after its 60 s start, idle
    assert (res.capacity_rps[t < 305] == 50.0).all()  # not serving before 300 + 5 s
    assert (res.capacity_rps[t >= 305] == 100.0).all()
    # a pod that becomes ready while it is wanted active serves at once, no promotion delay
    res2 = simulate(flat(10), Script([(0.0, 2, 2)]), cfg)
    assert res2.capacity_rps[61] == 100.0 and res2.capacity_rps[58] == 50.0


def test_a_removed_pod_costs_its_termination_grace() -> None:
    cfg = SimConfig(capacity_rps_per_replica=50.0, step_s=1.0, initial_replicas=6,
                    termination_s=30.0)
    res = simulate(flat(10), Script([(0.0, 6, 6), (120.0, 2, 2)]), cfg)
    t = np.arange(len(res.terminating))
    assert (res.terminating[(t >= 120) & (t < 150)] == 4).all()
    assert (res.terminating[t >= 150] == 0).all() and (res.terminating[t < 120] == 0).all()
    # 6 pods for 120 s, 2 + 4 terminating for 30 s, 2 for the rest of the 600 s
    assert res.gpu_hours == pytest.approx((6 * 120 + 6 * 30 + 2 * 450) / 3600)


def test_demand_is_seen_as_a_lagged_rate_over_the_window() -> None:
    # 10 req/s, then 100 req/s from 300 s on; 5 s steps, scrape 15 s, rate() over 60 s
    cfg = SimConfig(capacity_rps_per_replica=500.0, step_s=5.0, initial_replicas=1)
    v = np.where(np.arange(600) < 300, 10.0, 100.0)
    s = Script([(0.0, 1, 1)])
    simulate(Series(start_s=0.0, step_s=1.0, values=v, kind="count", absolute=False), s, cfg)
    seen = {sig.now_s: sig.demand_rps for sig in s.seen}
    assert seen[300.0] == pytest.approx(10.0)  # the jump is not visible yet
    assert seen[315.0] == pytest.approx(10.0)  # data up to 300 s: still the old rate
    assert seen[330.0] == pytest.approx((45 * 10 + 15 * 100) / 60)  # 15 s of the new rate
    assert seen[375.0] == pytest.approx(100.0)  # window full of it after scrape + window
    assert all(sig.observed_at_s == sig.now_s - 15.0 for sig in s.seen if sig.now_s > 15.0)


def test_an_autoscaler_with_its_own_lag_sees_fresher_demand() -> None:
    """The KPA scrapes the pods every second: at a 15 s step it sees the bucket that just
    ended, where a Prometheus reader sees the one before it."""
    cfg = SimConfig(capacity_rps_per_replica=500.0, step_s=15.0, initial_replicas=1)
    prom, fresh = Peeker(), Peeker()
    fresh.observation_lag_s = 1.0  # type: ignore[attr-defined]
    simulate(surge(10), prom, cfg)
    simulate(surge(10), fresh, cfg)
    assert [now - end for now, end in prom.seen[1:]] == [15.0] * (len(prom.seen) - 1)
    assert [now - end for now, end in fresh.seen[1:]] == [0.0] * (len(fresh.seen) - 1)
    kpa = REGISTRY["kpa"](10.0)
    assert kpa.observation_lag_s == 1.0  # type: ignore[attr-defined]
    # a wrapper passes the lag on
    from autoscaler.core.scenario import RecordingAutoscaler

    assert RecordingAutoscaler(kpa).observation_lag_s == 1.0


def test_the_kpa_reacts_one_bucket_sooner_than_with_the_prometheus_lag() -> None:
    """The same KPA with Prometheus' lag (``observation_lag_s=None`` restores the
    scenario's) scales up one 15 s step later on a jump."""
    cfg = SimConfig(capacity_rps_per_replica=10.0, step_s=15.0, initial_replicas=2)
    v = np.where(np.arange(900) < 300, 10.0, 100.0)
    trace = Series(start_s=0.0, step_s=1.0, values=v, kind="count", absolute=False)
    fast = simulate(trace, REGISTRY["kpa"](10.0), cfg)
    slow_pol = REGISTRY["kpa"](10.0)
    slow_pol.observation_lag_s = None  # type: ignore[attr-defined]
    slow = simulate(trace, slow_pol, cfg)
    first_up = [int(np.argmax(r.desired > 2)) for r in (fast, slow)]
    assert first_up[0] + 1 == first_up[1]


class Holder:
    """Holds its pods and records the demand rate() and the history it was shown."""

    name = "holder"
    interval_s = 15.0

    def __init__(self, demand_signal: str | None = None) -> None:
        self.seen: list[tuple[float, float | None, float]] = []
        if demand_signal is not None:
            self.demand_signal = demand_signal

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        total = float(np.sum(view.values) * view.step_s)
        self.seen.append((signals.now_s, signals.demand_rps, total))
        return Decision(signals.pods.desired, 0, Reason.BASELINE)


def test_demand_counted_at_completion_reads_a_saturated_fleet_as_its_throughput() -> None:
    """Every engine counts requests as they finish: with 2 pods of 50 req/s and 300 req/s
    arriving, the demand rate() reads 100 req/s and the history holds what was served;
    counted on arrival (or by an autoscaler that says so, the KPA) it reads 300."""
    cfg = SimConfig(capacity_rps_per_replica=50.0, step_s=15.0, initial_replicas=2)
    trace = surge(10, lo=300.0, hi=300.0)
    by_done = SimConfig(**{**cfg.__dict__, "demand_signal": "completions"})
    arr, done, own = Holder(), Holder(), Holder("arrivals")
    simulate(trace, arr, cfg)
    res = simulate(trace, done, by_done)
    simulate(trace, own, by_done)
    assert arr.seen[-1][1] == pytest.approx(300.0)
    assert own.seen == arr.seen
    assert done.seen[-1][1] == pytest.approx(100.0)
    now, _, total = done.seen[-1]
    k = round((now - 15.0) / 15.0)  # buckets visible one scrape back
    assert total == pytest.approx(float(res.served[:k].sum()))
    assert REGISTRY["kpa"](10.0).demand_signal == "arrivals"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="demand_signal"):
        SimConfig(capacity_rps_per_replica=1.0, demand_signal="starts")
    with pytest.raises(ValueError, match="unknown demand_signal"):
        simulate(trace, Holder("started"), cfg)
