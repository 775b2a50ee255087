"""MSTL + ARIMA: several seasons, short history, gaps, degenerate series, update, accuracy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from forecasting.errors import ForecastFailed, InsufficientHistory
from forecasting.models import mstl as mstl_module
from forecasting.models.mstl import MSTLForecaster
from forecasting.models.seasonal_naive import SeasonalNaive
from forecasting.scoring import mae
from forecasting.series import Series

Q = (0.05, 0.5, 0.95)


def weekly(n: int, *, noise: float = 3.0, seed: int = 0) -> Series:
    """Hourly: a daily sine plus a weekend dip, around 100, with Gaussian noise."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    v = 100 + 40 * np.sin(2 * np.pi * t / 24) - 25 * ((t // 24) % 7 >= 5)
    return Series(start_s=0.0, step_s=3600.0, values=np.maximum(v + rng.normal(0, noise, n), 0))


def truth(t0: int, n: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    t = np.arange(t0, t0 + n)
    out: np.ndarray[Any, np.dtype[np.float64]] = (
        100 + 40 * np.sin(2 * np.pi * t / 24) - 25 * ((t // 24) % 7 >= 5)
    )
    return out


def test_too_little_history() -> None:
    with pytest.raises(InsufficientHistory) as exc:
        MSTLForecaster().fit(Series(start_s=0, step_s=60, values=np.ones(15)))
    assert exc.value.needed == 16


def test_daily_and_weekly_seasons_are_both_modelled() -> None:
    s = weekly(24 * 21)
    m = MSTLForecaster(seasons=[24, 168]).fit(s)
    assert m.periods == (24, 168)
    f = m.predict(48, Q)  # covers the weekend dip that starts at t = 24 * 26
    assert mae(truth(24 * 21, 48), f.median) < 6
    assert np.all(f.quantile(0.05) <= f.median) and np.all(f.median <= f.quantile(0.95))


def test_detects_seasons_itself() -> None:
    m = MSTLForecaster().fit(weekly(24 * 21))
    assert 24 in m.periods


def test_short_history_falls_back_to_arima_alone() -> None:
    m = MSTLForecaster(seasons=[24]).fit(weekly(30))
    assert m.periods == ()
    f = m.predict(6, Q)
    assert np.all(np.isfinite(f.values)) and "mstl_periods=none" in f.detail


def test_gaps_are_bridged() -> None:
    s = weekly(24 * 15)
    v = s.values.copy()
    v[200:210] = np.nan
    v[-3:] = np.nan
    f = MSTLForecaster(seasons=[24, 168]).fit(s.replace(values=v)).predict(24, Q)
    assert f.start_s == s.end_s
    assert mae(truth(24 * 15, 24), f.median) < 8


@pytest.mark.parametrize("level", [0.0, 3.5])
def test_constant_and_all_zero_series(level: float) -> None:
    s = Series(start_s=0, step_s=300, values=np.full(400, level))
    m = MSTLForecaster().fit(s)
    np.testing.assert_allclose(m.predict(10, Q).values, level)
    m.update(Series(start_s=s.end_s, step_s=300, values=np.full(2, level)))
    f = m.predict(4, Q)
    np.testing.assert_allclose(f.values, level)
    assert f.start_s == s.end_s + 600


def test_update_moves_the_origin_and_matches_a_refit() -> None:
    s = weekly(24 * 16)
    hist, new = s.slice(0, 24 * 15), s.slice(24 * 15, 24 * 15 + 3)
    m = MSTLForecaster(seasons=[24, 168]).fit(hist)
    m.update(new)
    assert m.n_refits == 1
    f = m.predict(12, Q)
    assert f.start_s == new.end_s
    ref = MSTLForecaster(seasons=[24, 168]).fit(hist.append(new)).predict(12, Q)
    assert np.max(np.abs(f.median - ref.median)) < 0.06 * 100


def test_refit_cadence() -> None:
    s = weekly(24 * 17)
    m = MSTLForecaster(refit_every_s=12 * 3600).fit(s.slice(0, 24 * 15))
    m.update(s.slice(24 * 15, 24 * 15 + 6))
    assert m.n_refits == 1
    m.update(s.slice(24 * 15 + 6, 24 * 15 + 12))
    assert m.n_refits == 2


def test_library_failure_becomes_forecast_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise np.linalg.LinAlgError("LU decomposition error")

    monkeypatch.setattr(mstl_module, "ARIMA", Broken)
    with pytest.raises(ForecastFailed, match="ARIMA"):
        MSTLForecaster().fit(weekly(24 * 5))


def test_beats_seasonal_naive_on_wikipedia(load_trace: Callable[[str], Series]) -> None:
    wiki = load_trace("wikipedia_en_2016_01")
    ours, naive = [], []
    for origin in range(24 * 21, 24 * 28, 24):
        hist, actual = wiki.slice(0, origin), wiki.values[origin : origin + 24]
        ours.append(mae(actual, MSTLForecaster().fit(hist).predict(24, Q).median))
        naive.append(mae(actual, SeasonalNaive().fit(hist).predict(24, Q).median))
    assert np.mean(ours) < 0.9 * np.mean(naive)
