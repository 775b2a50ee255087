"""Property tests (hypothesis): quantiles are monotone (q0.5 <= q0.9 <= q0.99) and
non-negative, for the Forecast type itself and for every fast registered model on random
seasonal series."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from forecasting.forecast import Forecast
from forecasting.models import make
from forecasting.scoring import pinball
from forecasting.series import Series

LEVELS = (0.05, 0.5, 0.9, 0.99)


@given(
    values=arrays(
        np.float64, st.tuples(st.just(len(LEVELS)), st.integers(1, 30)),
        elements=st.floats(-1e6, 1e6, allow_nan=False),
    ),
    actual_seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=80, deadline=None)
def test_forecast_rearranges_crossing_quantiles(values: np.ndarray, actual_seed: int) -> None:
    f = Forecast(start_s=0, step_s=60, quantiles=LEVELS, values=values, model="x")
    assert np.all(np.diff(f.values, axis=0) >= 0)
    assert np.all(f.values >= 0)
    # the sorted rearrangement never worsens the summed pinball loss (Chernozhukov et al.)
    actual = np.random.default_rng(actual_seed).uniform(0, 1e6, values.shape[1])
    clipped = np.maximum(values, 0)
    before = sum(pinball(actual, clipped[i], q) for i, q in enumerate(LEVELS))
    after = sum(pinball(actual, f.values[i], q) for i, q in enumerate(LEVELS))
    assert after <= before + 1e-6 * max(1.0, before)


@st.composite
def seasonal_series(draw: st.DrawFn) -> Series:
    season = draw(st.sampled_from([6, 12, 24]))
    cycles = draw(st.integers(3, 6))
    n = season * cycles
    level = draw(st.floats(0, 1e4))
    amp = draw(st.floats(0, 1.0))
    noise = draw(st.floats(0, 0.5))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    v = level * (1 + amp * np.sin(2 * np.pi * t / season)) * (1 + noise * rng.standard_normal(n))
    v = np.maximum(v, 0)
    if draw(st.booleans()):  # a few missing buckets inside
        holes = rng.choice(np.arange(1, n - 1), size=min(3, n // 10), replace=False)
        v[holes] = np.nan
    return Series(start_s=0, step_s=3600, values=v, absolute=False, name="prop")


@pytest.mark.parametrize("model", ["seasonal_naive", "ets", "mstl", "gbm"])
@given(series=seasonal_series(), h=st.integers(1, 30))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_models_return_monotone_non_negative_quantiles(model: str, series: Series, h: int) -> None:
    m = make(model)
    if series.n_observed < m.min_history(series.step_s):
        return
    f = m.fit(series).predict(h, quantiles=LEVELS)
    assert f.values.shape == (len(LEVELS), h)
    assert np.all(np.isfinite(f.values)) and np.all(f.values >= 0)
    q50, q90, q99 = f.quantile(0.5), f.quantile(0.9), f.quantile(0.99)
    assert np.all(q50 <= q90) and np.all(q90 <= q99)
    assert f.start_s == series.end_s
