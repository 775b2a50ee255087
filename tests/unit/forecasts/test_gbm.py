"""Quantile gradient boosting: any levels, calendar features, gaps, update, determinism."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from forecasting.errors import ForecastFailed, InsufficientHistory
from forecasting.models.gbm import QuantileGBM
from forecasting.models.seasonal_naive import SeasonalNaive
from forecasting.scoring import mae
from forecasting.series import Series

Q = (0.05, 0.5, 0.95)
FAST: dict[str, Any] = {"max_iter": 40, "max_rows": 3000}


def daily(n: int, *, noise: float = 3.0, seed: int = 0, absolute: bool = True) -> Series:
    """Hourly daily sine around 100 (amplitude 40), starting on a Monday 00:00 UTC."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    v = 100 + 40 * np.sin(2 * np.pi * t / 24) + rng.normal(0, noise, n)
    start = 1_451_865_600.0 if absolute else 0.0  # 2016-01-04, a Monday
    return Series(start_s=start, step_s=3600.0, values=np.maximum(v, 0), absolute=absolute)


def truth(t0: int, n: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    out: np.ndarray[Any, np.dtype[np.float64]] = 100 + 40 * np.sin(
        2 * np.pi * np.arange(t0, t0 + n) / 24
    )
    return out


def test_too_little_history() -> None:
    with pytest.raises(InsufficientHistory) as exc:
        QuantileGBM().fit(Series(start_s=0, step_s=60, values=np.ones(23)))
    assert exc.value.needed == 24


@pytest.mark.parametrize("absolute", [True, False])
def test_learns_the_daily_shape(absolute: bool) -> None:
    f = QuantileGBM(**FAST).fit(daily(24 * 10, absolute=absolute)).predict(24, Q)
    assert mae(truth(240, 24), f.median) < 6
    width = f.quantile(0.95) - f.quantile(0.05)
    assert np.all(width > 2)  # noise sd 3: a real interval, not a point


def test_any_quantile_level_is_served() -> None:
    m = QuantileGBM(**FAST).fit(daily(24 * 10))
    f = m.predict(6, (0.01, 0.3, 0.5, 0.75, 0.999))
    assert f.values.shape == (5, 6)
    assert np.all(np.diff(f.values, axis=0) >= 0)
    assert np.all(f.quantile(0.999) > f.quantile(0.75))
    assert np.all(f.quantile(0.01) < f.quantile(0.3))


def test_gaps_are_bridged() -> None:
    s = daily(24 * 10)
    v = s.values.copy()
    v[60:70] = np.nan
    v[-2:] = np.nan
    f = QuantileGBM(**FAST).fit(s.replace(values=v)).predict(24, Q)
    assert f.start_s == s.end_s
    assert mae(truth(240, 24), f.median) < 8


@pytest.mark.parametrize("level", [0.0, 12.0])
def test_constant_and_all_zero_series(level: float) -> None:
    s = Series(start_s=0, step_s=60, values=np.full(300, level))
    m = QuantileGBM(**FAST).fit(s)
    np.testing.assert_allclose(m.predict(5, Q).values, level)
    m.update(Series(start_s=s.end_s, step_s=60, values=np.full(2, level)))
    f = m.predict(5, Q)
    np.testing.assert_allclose(f.values, level)
    assert f.start_s == s.end_s + 120


def test_update_keeps_the_trees_and_tracks_a_refit() -> None:
    s = daily(24 * 11)
    hist, new = s.slice(0, 24 * 10), s.slice(24 * 10, 24 * 10 + 5)
    m = QuantileGBM(**FAST).fit(hist)
    trees = list(m._models)
    m.update(new)
    assert m._models == trees and m.n_refits == 1
    f = m.predict(12, Q)
    assert f.start_s == new.end_s
    ref = QuantileGBM(**FAST).fit(hist.append(new)).predict(12, Q)
    assert mae(ref.median, f.median) < 0.06 * 100
    # the forecast really moved with the origin: it follows the sine 5 h later
    assert mae(truth(245, 12), f.median) < 6


def test_refit_cadence() -> None:
    s = daily(24 * 12)
    m = QuantileGBM(refit_every_s=6 * 3600, **FAST).fit(s.slice(0, 240))
    m.update(s.slice(240, 244))
    assert m.n_refits == 1
    m.update(s.slice(244, 247))
    assert m.n_refits == 2


def test_deterministic_given_a_seed() -> None:
    s = daily(24 * 8, noise=10)
    a = QuantileGBM(seed=1, **FAST).fit(s).predict(12, Q)
    b = QuantileGBM(seed=1, **FAST).fit(s).predict(12, Q)
    c = QuantileGBM(seed=2, **FAST).fit(s).predict(12, Q)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)


def test_library_failure_becomes_forecast_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("Input contains NaN")

    monkeypatch.setattr(HistGradientBoostingRegressor, "fit", boom)
    with pytest.raises(ForecastFailed, match=r"gbm: fit q0\.05 failed"):
        QuantileGBM(**FAST).fit(daily(24 * 4))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        QuantileGBM(max_rows=10)
    with pytest.raises(ValueError, match="refit_every_s"):
        QuantileGBM(refit_every_s=0)


def test_beats_seasonal_naive_on_wikipedia(load_trace: Callable[[str], Series]) -> None:
    wiki = load_trace("wikipedia_en_2016_01")
    ours, naive = [], []
    for origin in range(24 * 21, 24 * 28, 48):
        hist, actual = wiki.slice(0, origin), wiki.values[origin : origin + 24]
        ours.append(mae(actual, QuantileGBM(**FAST).fit(hist).predict(24, Q).median))
        naive.append(mae(actual, SeasonalNaive().fit(hist).predict(24, Q).median))
    assert np.mean(ours) < 0.9 * np.mean(naive)
