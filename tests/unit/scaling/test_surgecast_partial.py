"""surgecast on a coarse forecast step: the bucket in progress conditioned on its observed part."""

from __future__ import annotations

import numpy as np

from autoscaler.core.settings import PolicySettings
from autoscaler.core.simulator import SimConfig, simulate
from autoscaler.core.surgecast import SurgecastAutoscaler
from forecasting.series import Series

CAP = 10.0


def _run(values: np.ndarray, partial: bool) -> tuple[SurgecastAutoscaler, float]:
    """A 10-minute trace replayed at 60 s (constant within each bucket), 10-minute buckets."""
    trace = Series(start_s=0.0, step_s=600.0, values=values, kind="rate", name="t")
    sc = SurgecastAutoscaler(
        PolicySettings(CAP, max_replicas=400, interval_s=60.0, cold_start_prior_s=120.0),
        forecast_step_s=600.0,
        refit_every_s=6 * 3600.0,
        partial_bucket=partial,
    )
    res = simulate(trace, sc, SimConfig(capacity_rps_per_replica=CAP, step_s=60.0, seed=0))
    return sc, res.gpu_hours


def test_the_bucket_in_progress_is_forecast_at_its_observed_level() -> None:
    """Levels that jump at random between 10-minute buckets: the model's interval for the
    bucket in progress is wide (it cannot know the jump), but once part of the bucket is
    observed its forecast is that level exactly; the replay then costs fewer GPU-hours."""
    rng = np.random.default_rng(3)
    values = rng.uniform(100.0, 300.0, 6 * 24 * 2)
    sc, gpu = _run(values, True)
    fc = sc.last_forecast
    assert fc is not None and "first bucket from" in fc.detail
    n_obs = round((fc.start_s - sc._start_s) / 600.0)  # type: ignore[operator]
    level = values[n_obs]
    np.testing.assert_allclose(fc.values[:, 0], level)
    plain, gpu_plain = _run(values, False)
    assert plain.last_forecast is not None
    spread = plain.last_forecast.quantile(0.9)[0] - plain.last_forecast.quantile(0.5)[0]
    assert spread > 0.1 * level  # the model alone holds its wide interval
    assert gpu < gpu_plain
