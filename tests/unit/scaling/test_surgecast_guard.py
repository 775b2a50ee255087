"""surgecast in the simulator with the live controller's prediction guard switched on."""

from __future__ import annotations

import numpy as np

from autoscaler.core.prediction_guard import GuardSettings
from autoscaler.core.settings import PolicySettings
from autoscaler.core.simulator import SimConfig, simulate
from autoscaler.core.surgecast import SurgecastAutoscaler
from forecasting.series import Series

CAP = 10.0


def _run(values: np.ndarray, guard: GuardSettings | None) -> tuple[SurgecastAutoscaler, int]:
    trace = Series(start_s=0.0, step_s=60.0, values=values, kind="rate", name="t")
    sc = SurgecastAutoscaler(
        PolicySettings(CAP, max_replicas=400, interval_s=60.0),
        model="seasonal_naive",
        model_kwargs={"season": 60},
        forecast_step_s=60.0,
        refit_every_s=3600.0,
        guard=guard,
    )
    res = simulate(trace, sc, SimConfig(capacity_rps_per_replica=CAP, step_s=60.0, seed=0))
    return sc, res.reasons.get("ForecastLead", 0)


def test_guard_withholds_a_forecast_worse_than_persistence() -> None:
    """An hourly 'season' that stops repeating: in the fourth hour demand is flat, so
    seasonal naive predicts the third hour's swings while persistence is exact. With the
    guard the policy stops using the forecast; without it, it keeps using it."""
    t = np.arange(60 * 4)
    swings = 200 + 150 * np.sin(2 * np.pi * t / 60)
    values = np.where(t < 180, swings, 400.0)
    guarded, lead_guarded = _run(values, GuardSettings())
    assert guarded.guard is not None and not guarded.guard.enabled
    assert guarded.guard.mae is not None and guarded.guard.reactive_mae is not None
    assert guarded.guard.mae > guarded.guard.reactive_mae
    plain, lead_plain = _run(values, None)
    assert plain.guard is None
    assert lead_guarded < lead_plain


def test_guard_keeps_a_forecast_that_beats_persistence() -> None:
    t = np.arange(60 * 5)
    values = 200 + 150 * np.sin(2 * np.pi * t / 60)  # the season repeats exactly
    guarded, lead = _run(values, GuardSettings())
    assert guarded.guard is not None and guarded.guard.enabled and lead > 0
