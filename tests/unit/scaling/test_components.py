"""Capacity model, lead-time estimator, warm pool and schedule windows."""

from __future__ import annotations

import numpy as np

from autoscaler.core.capacity import CapacityEstimate, update_capacity
from autoscaler.core.lead_time import LeadTimeEstimate
from autoscaler.core.schedule import bounds_at, window_active
from autoscaler.core.settings import ScheduleWindow
from autoscaler.core.warm_pool import warm_pool_size
from forecasting.forecast import Forecast


def test_capacity_refines_only_when_saturated_and_stays_bounded() -> None:
    est = CapacityEstimate.initial(10.0)
    same = update_capacity(est, throughput_rps=40.0, ready_pods=8, queue_depth=0.0)
    assert same.rps == 10.0  # not saturated: 5 req/s per pod says nothing about capacity
    for _ in range(50):
        est = update_capacity(est, throughput_rps=96.0, ready_pods=8, queue_depth=80.0)
    assert abs(est.rps - 12.0) < 0.1 and est.samples == 50
    for _ in range(100):
        est = update_capacity(est, throughput_rps=1000.0, ready_pods=1, queue_depth=50.0)
    assert est.rps <= 20.0  # max_ratio 2
    assert update_capacity(est, throughput_rps=None, ready_pods=1, queue_depth=5.0) == est


def test_lead_time_prior_then_robust_quantile() -> None:
    lt = LeadTimeEstimate(prior_s=120.0, min_samples=5)
    lt = lt.observe(60.0, 62.0, 64.0)
    assert lt.lead_s == 120.0
    lt = lt.observe(66.0, 68.0, 3600.0, float("nan"), -1.0)  # one stuck pod, junk ignored
    assert 64.0 <= lt.lead_s <= 68.0


def test_warm_pool_from_spread_and_ramp() -> None:
    med = np.array([100.0, 100.0, 140.0, 140.0])
    f = Forecast(
        start_s=0.0,
        step_s=60.0,
        quantiles=(0.5, 0.95),
        values=np.vstack([med, med + 35.0]),
        model="t",
    )
    # spread 35 + ramp 40 = 75 req/s at 10 per pod -> 8
    assert warm_pool_size(f, 0.0, 120.0, 10.0, warm_max=20) == 8
    assert warm_pool_size(f, 0.0, 120.0, 10.0, warm_max=5) == 5
    assert warm_pool_size(f, 0.0, 120.0, 10.0, warm_max=0) == 0


def test_schedule_window_wraps_midnight_and_overrides() -> None:
    night = ScheduleWindow("22:00", "06:00", max_replicas=4, days=frozenset({0}))  # Monday night
    mon_23 = 1_700_434_800.0  # 2023-11-19 23:00 UTC is a Sunday -> use +1 day
    assert not window_active(night, mon_23)
    assert window_active(night, mon_23 + 86400)  # Monday 23:00
    assert window_active(night, mon_23 + 86400 + 4 * 3600)  # Tuesday 03:00, from Monday
    assert bounds_at((night,), mon_23 + 86400, 1, 100) == (1, 4, True)
    assert bounds_at((night,), mon_23, 1, 100) == (1, 100, False)
