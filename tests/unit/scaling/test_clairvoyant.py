"""The benchmark's yardstick: surgecast's policy fed the true future demand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from autoscaler.core.baselines.clairvoyant import ClairvoyantSurgecast
from autoscaler.core.scenario import build_scenario, compare, make_clairvoyant, make_surgecast
from autoscaler.core.settings import PolicySettings
from autoscaler.core.simulator import demand_rates, simulate
from forecasting.series import Series

#: plan with the slowest cold start the scenario draws (1.5 x 120 s): with the median as
#: the lead, half the pods ordered for the surge are late even when the forecast is exact
SLOW_LEAD = {"cold_start_prior_s": 180.0}


def _surge() -> Series:
    """300 req/s for 40 min, then 2000 req/s for 20 min: nothing in the history says when."""
    v = np.concatenate([np.full(2400, 300.0), np.full(1200, 2000.0)])
    return Series(start_s=0.0, step_s=1.0, values=v, kind="count", absolute=False, name="s")


def test_the_forecast_is_the_true_mean_of_each_bucket() -> None:
    trace = _surge()
    sc = build_scenario(trace, 15.0)
    pol = make_clairvoyant(sc, trace.start_s, 60.0, overrides=SLOW_LEAD)
    res = simulate(trace, pol, sc.config, name="c")
    fc = pol.last_forecast
    assert fc is not None and fc.model == "clairvoyant" and fc.step_s == 60.0
    rates = demand_rates(trace, 15.0).values
    for j in range(fc.horizon):
        i0 = int((fc.start_s + j * 60.0) / 15.0)
        want = rates[min(i0, len(rates) - 1) : min(i0 + 4, len(rates))].mean()
        assert np.allclose(fc.values[:, j], want)
    assert res.summary(sc.oracle_gpu_hours)["slo_pct"] > 99.9


def test_it_serves_the_surge_that_surgecast_with_a_real_forecaster_cannot_foresee() -> None:
    """The onset of a first-ever surge is unforeseeable: surgecast with ``nowcast`` misses
    requests there; with the truth as its forecast the same policy has the pods ready."""
    trace = _surge()
    sc = build_scenario(trace, 15.0)
    rows = {
        str(r["policy"]): r
        for r, _ in compare(
            trace,
            sc,
            {
                "real": make_surgecast(sc, trace.step_s, overrides=SLOW_LEAD),
                "perfect": make_clairvoyant(sc, trace.start_s, 60.0, overrides=SLOW_LEAD),
            },
        )
    }
    assert float(rows["real"]["slo_pct"]) < 95.0
    assert float(rows["perfect"]["slo_pct"]) > 99.9


def test_a_step_that_is_not_a_multiple_of_the_simulator_step_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple"):
        ClairvoyantSurgecast(PolicySettings(10.0), np.ones(10), 0.0, 15.0, forecast_step_s=50.0)


def test_with_an_exact_forecast_the_climb_to_a_step_finishes_before_the_step() -> None:
    """Cold starts of exactly 120 s planned as 120 s, and a step from 5 to 32 pods that
    the scale-up limits climb in three ticks: looking only lead + interval ahead the last
    pods arrive after the step and requests miss; with the ramp look-ahead none do."""
    trace = _surge()
    sc = build_scenario(trace, 15.0)
    sc = replace(sc, config=replace(sc.config, cold_start_sigma=0.0))
    rows = {
        str(r["policy"]): float(r["slo_pct"])
        for r, _ in compare(
            trace,
            sc,
            {
                "look-ahead": make_clairvoyant(sc, trace.start_s, 60.0),
                "none": make_clairvoyant(
                    sc, trace.start_s, 60.0, overrides={"ramp_lookahead_s": 0.0}
                ),
            },
        )
    }
    assert rows["none"] < 99.0
    assert rows["look-ahead"] == 100.0
