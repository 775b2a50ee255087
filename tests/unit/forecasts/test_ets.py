"""Holt-Winters / ETS: fallbacks below two seasons, gaps, degenerate series, update, accuracy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from forecasting.errors import ForecastFailed, InsufficientHistory
from forecasting.models import ets as ets_module
from forecasting.models.ets import ETS
from forecasting.models.seasonal_naive import SeasonalNaive
from forecasting.scoring import mae
from forecasting.series import Series

Q = (0.05, 0.5, 0.95)


def daily(n: int, *, step_s: float = 3600.0, noise: float = 3.0, seed: int = 0) -> Series:
    """A daily sine around 100 (amplitude 40) with Gaussian noise."""
    per_day = round(86400 / step_s)
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    v = 100 + 40 * np.sin(2 * np.pi * t / per_day) + rng.normal(0, noise, n)
    return Series(start_s=0.0, step_s=step_s, values=np.maximum(v, 0))


def test_too_little_history() -> None:
    with pytest.raises(InsufficientHistory) as exc:
        ETS().fit(Series(start_s=0, step_s=60, values=np.ones(9)))
    assert exc.value.needed == 10


def test_less_than_two_seasons_degrades_to_a_trend_model() -> None:
    # 30 h of hourly data with a daily season asked for: the PHPA anchor crashes here
    s = daily(30)
    m = ETS(seasons=[24]).fit(s)
    f = m.predict(6, Q)
    assert "model=damped trend" in f.detail and "season" not in f.detail.split("model=")[1]
    assert np.all(np.isfinite(f.values))
    # with two full seasons the seasonal model is used and tracks the sine
    s = daily(24 * 6)
    f = ETS(seasons=[24]).fit(s).predict(24, Q)
    assert "season 24" in f.detail
    truth = 100 + 40 * np.sin(2 * np.pi * np.arange(24 * 6, 24 * 7) / 24)
    assert mae(truth, f.median) < 6


def test_gaps_are_bridged() -> None:
    s = daily(24 * 8)
    v = s.values.copy()
    v[100:106] = np.nan
    v[-2:] = np.nan
    f = ETS().fit(s.replace(values=v)).predict(24, Q)
    assert f.start_s == s.end_s
    truth = 100 + 40 * np.sin(2 * np.pi * np.arange(24 * 8, 24 * 9) / 24)
    assert mae(truth, f.median) < 8


@pytest.mark.parametrize("level", [0.0, 7.0])
def test_constant_and_all_zero_series(level: float) -> None:
    s = Series(start_s=0, step_s=60, values=np.full(500, level))
    m = ETS().fit(s)
    f = m.predict(10, Q)
    np.testing.assert_allclose(f.values, level)
    f = m.update(Series(start_s=s.end_s, step_s=60, values=np.full(3, level))).predict(5, Q)
    np.testing.assert_allclose(f.values, level)
    assert f.start_s == s.end_s + 180


def test_update_moves_the_origin_and_matches_a_refit() -> None:
    s = daily(24 * 10)
    hist, new = s.slice(0, 24 * 9), s.slice(24 * 9, 24 * 9 + 4)
    m = ETS().fit(hist)
    m.update(new)
    assert m.n_refits == 1  # no re-estimation for 4 new hours
    f = m.predict(12, Q)
    assert f.start_s == new.end_s
    ref = ETS().fit(hist.append(new)).predict(12, Q)
    assert np.max(np.abs(f.median - ref.median)) < 0.05 * 100


def test_refit_cadence() -> None:
    s = daily(24 * 12)
    m = ETS(refit_every_s=6 * 3600).fit(s.slice(0, 24 * 10))
    m.update(s.slice(24 * 10, 24 * 10 + 4))
    assert m.n_refits == 1
    m.update(s.slice(24 * 10 + 4, 24 * 10 + 7))
    assert m.n_refits == 2  # 7 h of new data >= 6 h cadence
    never = ETS(refit_every_s=None).fit(s.slice(0, 24 * 10))
    never.update(s.slice(24 * 10, 24 * 12))
    assert never.n_refits == 1


def test_quantiles_widen_with_the_horizon() -> None:
    f = ETS().fit(daily(24 * 10, noise=8)).predict(24, Q)
    width = f.quantile(0.95) - f.quantile(0.05)
    assert width[0] > 5 and width[-1] >= width[0]


def test_fine_steps_are_fitted_coarse_and_keep_the_intraday_shape() -> None:
    s = daily(1440 * 4, step_s=60.0, noise=5)
    m = ETS().fit(s)
    f = m.predict(120, Q)
    assert "factor=10" in f.detail
    truth = 100 + 40 * np.sin(2 * np.pi * np.arange(1440 * 4, 1440 * 4 + 120) / 1440)
    assert mae(truth, f.median) < 4
    # 90 % band covers the noisy fine observations most of the time
    nxt = daily(1440 * 4 + 120, step_s=60.0, noise=5).values[-120:]
    inside = (nxt >= f.quantile(0.05)) & (nxt <= f.quantile(0.95))
    assert 0.75 < inside.mean() <= 1.0


def test_library_failure_becomes_forecast_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise np.linalg.LinAlgError("singular matrix")

    monkeypatch.setattr(ets_module.ExponentialSmoothing, "fit", boom)
    with pytest.raises(ForecastFailed, match="every model variant failed"):
        ETS().fit(daily(24 * 5))


def test_beats_seasonal_naive_on_wikipedia(load_trace: Callable[[str], Series]) -> None:
    wiki = load_trace("wikipedia_en_2016_01")
    ours, naive = [], []
    for origin in range(24 * 21, 24 * 28, 24):
        hist, actual = wiki.slice(0, origin), wiki.values[origin : origin + 24]
        ours.append(mae(actual, ETS().fit(hist).predict(24, Q).median))
        naive.append(mae(actual, SeasonalNaive().fit(hist).predict(24, Q).median))
    assert np.mean(ours) < 0.85 * np.mean(naive)


def test_update_filter_equals_statsmodels_refiltering_the_whole_history() -> None:
    s = daily(24 * 12)
    m = ETS(seasons=[24], refit_every_s=None).fit(s.slice(0, 24 * 10))
    m.update(s.slice(24 * 10, 24 * 12))
    spec, p = m.spec, m._params
    ref = ets_module._model(m._y, spec, known=p).fit(
        smoothing_level=p["smoothing_level"], smoothing_trend=p["smoothing_trend"],
        smoothing_seasonal=p["smoothing_seasonal"], damping_trend=p["damping_trend"],
        optimized=False,
    )
    assert len(m._y) == 24 * 12
    np.testing.assert_allclose(m._level, ref.level[-1], rtol=1e-9)
    np.testing.assert_allclose(m._trend, ref.trend[-1], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(m._season, ref.season[-24:], rtol=1e-9, atol=1e-9)
