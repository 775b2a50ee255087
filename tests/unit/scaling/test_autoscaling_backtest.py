"""A small backtest on a real trace: surgecast scales up before the daily peak that the
HPA only reacts to after it arrives."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from autoscaler.core.baselines import REGISTRY
from autoscaler.core.settings import PolicySettings
from autoscaler.core.simulator import SimConfig, demand_rates, simulate
from autoscaler.core.surgecast import SurgecastAutoscaler
from forecasting.series import Series


def test_surgecast_leads_hpa_on_wikipedia(load_trace: Callable[[str], Series]) -> None:
    trace = load_trace("wikipedia_en_2016_01").slice(0, 24 * 5)  # five days, hourly
    cfg = SimConfig(capacity_rps_per_replica=1.0, step_s=60.0, seed=1)
    rates = demand_rates(trace, cfg.step_s).values
    cap = float(rates.max()) / 40 / 0.7  # the peak needs ~40 replicas at 70 %
    cfg = SimConfig(capacity_rps_per_replica=cap, step_s=60.0, seed=1)
    sc = SurgecastAutoscaler(
        PolicySettings(cap, max_replicas=200, interval_s=60.0),
        model="seasonal_naive",
        forecast_step_s=3600.0,
        refit_every_s=6 * 3600.0,
    )
    ours = simulate(trace, sc, cfg)
    hpa = simulate(trace, REGISTRY["hpa_rps"](cap, max_replicas=200, interval_s=60.0), cfg)
    assert math.isclose(ours.served.sum() + ours.backlog[-1], ours.arrivals, rel_tol=1e-9)
    # on the last three days (the forecaster has two days of history) at the hours where
    # demand jumps most, surgecast has more capacity ready at the jump than the HPA
    day3 = 2 * 24 * 60
    hourly = rates[day3::60]
    jumps = np.argsort(np.diff(hourly))[-5:] + 1
    idx = day3 + jumps * 60
    assert np.mean(ours.capacity_rps[idx]) > np.mean(hpa.capacity_rps[idx])
    # ... because it had asked for it before the jump (at least a cold start earlier)
    before = idx - 3
    assert np.mean(ours.desired[before] - ours.desired[before - 60]) > np.mean(
        hpa.desired[before] - hpa.desired[before - 60]
    )
    assert ours.reasons.get("ForecastLead", 0) > 0
