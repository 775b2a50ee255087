"""Rolling-origin backtest: origins, refit cadence, gaps, recorded failures, real trace."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar, Self

import numpy as np
import pytest

from forecasting.backtest import cross_validation, interval_bounds, rolling_origins
from forecasting.errors import ForecastFailed, InsufficientHistory
from forecasting.forecast import DEFAULT_QUANTILES, Forecast
from forecasting.models import make
from forecasting.models.seasonal_naive import SeasonalNaive
from forecasting.series import Series


class Recorder:
    """A tiny real forecaster (last value +- 1) that records how it was driven."""

    name = "recorder"
    log: ClassVar[list[tuple[str, int]]] = []

    def __init__(self, fail_below: int = 0, fail_at: frozenset[int] = frozenset()) -> None:
        self.fail_below = fail_below
        self.fail_at = fail_at
        self.hist: Series | None = None

    def min_history(self, step_s: float) -> int:
        return 2

    def fit(self, series: Series) -> Self:
        if len(series) < self.fail_below:
            raise InsufficientHistory("too short", needed=self.fail_below, got=len(series))
        if len(series) in self.fail_at:
            raise ForecastFailed("diverged")
        self.log.append(("fit", len(series)))
        self.hist = series
        return self

    def update(self, new: Series) -> Self:
        assert self.hist is not None
        self.hist = self.hist.append(new)
        self.log.append(("update", len(self.hist)))
        return self

    def predict(self, h: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Forecast:
        assert self.hist is not None
        last = float(self.hist.values[-1])
        qs = tuple(sorted(quantiles))
        vals = np.array([[last + (q - 0.5) * 4] * h for q in qs])
        return Forecast(start_s=self.hist.end_s, step_s=self.hist.step_s, quantiles=qs,
                        values=vals, model=self.name)


def _series(n: int = 60) -> Series:
    return Series(start_s=0, step_s=60, values=10.0 + np.arange(n) % 5)


def test_rolling_origins_end_with_the_series() -> None:
    assert rolling_origins(100, 10, n_windows=3) == [70, 80, 90]
    assert rolling_origins(100, 10, n_windows=3, step_size=5) == [80, 85, 90]
    with pytest.raises(InsufficientHistory) as exc:
        rolling_origins(20, 10, n_windows=3)
    assert exc.value.got == 20 and exc.value.needed == 31
    with pytest.raises(ValueError):
        rolling_origins(100, 0)


def test_interval_bounds() -> None:
    assert interval_bounds(0.9) == (0.05, 0.95)
    assert interval_bounds(0.5) == (0.25, 0.75)
    with pytest.raises(ValueError):
        interval_bounds(1.0)


@pytest.mark.parametrize(
    ("refit", "expected"),
    [
        (True, ["fit", "fit", "fit", "fit"]),
        (False, ["fit", "update", "update", "update"]),
        (2, ["fit", "update", "fit", "update"]),
    ],
)
def test_refit_cadence(refit: bool | int, expected: list[str]) -> None:
    Recorder.log = []
    res = cross_validation(_series(), Recorder, 5, n_windows=4, refit=refit)
    assert [k for k, _ in Recorder.log] == expected
    # every step sees exactly the history before its origin
    assert [n for _, n in Recorder.log] == [40, 45, 50, 55]
    assert [o.refit for o in res.origins] == [k == "fit" for k in expected]
    assert res.n_ok == 4 and res.n_failed == 0


def test_scores_match_hand_computation() -> None:
    s = _series()
    res = cross_validation(s, Recorder, 5, origins=[50, 55], refit=True)
    act = np.concatenate([s.values[50:55], s.values[55:60]])
    pred = np.concatenate([np.full(5, s.values[49]), np.full(5, s.values[54])])
    assert res.mae == pytest.approx(float(np.mean(np.abs(act - pred))))
    assert res.rmse == pytest.approx(float(np.sqrt(np.mean((act - pred) ** 2))))
    # interval last +- 1.8: covers only actuals within 1.8 of the last value
    inside = np.abs(act - pred) <= 1.8
    assert res.coverage[0.9] == pytest.approx(float(inside.mean()))
    assert set(res.pinball) >= {0.05, 0.5, 0.95}
    assert not math.isnan(res.mase) and res.to_dict()["n_ok"] == 2


def test_gaps_in_actuals_never_count() -> None:
    vals = 10.0 + np.arange(60) % 5
    vals[52:55] = np.nan
    s = Series(start_s=0, step_s=60, values=vals)
    res = cross_validation(s, Recorder, 5, origins=[50], refit=True)
    a = vals[50:55]
    ok = ~np.isnan(a)
    assert res.mae == pytest.approx(float(np.mean(np.abs(a[ok] - vals[49]))))


def test_failures_are_recorded_not_fatal() -> None:
    Recorder.log = []
    res = cross_validation(
        _series(), lambda: Recorder(fail_below=45, fail_at=frozenset({50})), 5,
        n_windows=4, refit=True,
    )
    assert [o.ok for o in res.origins] == [False, True, False, True]
    assert res.n_failed == 2
    assert res.errors[0].startswith("InsufficientHistory") and "ForecastFailed" in res.errors[1]
    assert not math.isnan(res.mae)


def test_after_a_failure_the_next_origin_refits() -> None:
    Recorder.log = []
    res = cross_validation(
        _series(), lambda: Recorder(fail_below=45), 5, n_windows=4, refit=False
    )
    assert [o.refit for o in res.origins] == [True, True, False, False]
    assert res.n_failed == 1


def test_explicit_origins_are_validated() -> None:
    with pytest.raises(ValueError, match="increasing"):
        cross_validation(_series(), Recorder, 5, origins=[40, 40])
    with pytest.raises(InsufficientHistory):
        cross_validation(_series(), Recorder, 5, origins=[58])


def test_time_budget_stops_early() -> None:
    res = cross_validation(_series(), Recorder, 5, n_windows=4, time_budget_s=0.0)
    assert res.timed_out and 1 <= len(res.origins) < 4


def test_backtest_on_a_real_trace(load_trace: Callable[[str], Series]) -> None:
    """Seasonal naive on Wikipedia, 4 daily origins: sane, finite, calibrated-ish scores."""
    s = load_trace("wikipedia_en_2016_01")
    res = cross_validation(s, lambda: make("seasonal_naive"), 24, n_windows=4, refit=2)
    assert res.n_ok == 4 and res.season == 24
    level = float(np.nanmean(s.values))
    assert 0 < res.mae < 0.3 * level
    assert res.rmse >= res.mae
    assert 0 < res.mase < 3 and 0 < res.smape < 50
    assert 0.5 <= res.coverage[0.9] <= 1.0
    assert res.pinball[0.5] == pytest.approx(res.mae / 2)
    assert res.fit_s >= 0 and res.predict_s >= 0
    d = res.to_dict()
    assert d["model"] == "seasonal_naive" and d["coverage"]["0.9"] == res.coverage[0.9]


def test_seasonal_naive_is_exact_on_a_pure_season() -> None:
    s = Series(start_s=0, step_s=3600, values=np.tile(np.arange(24.0) + 1, 6))
    res = cross_validation(s, lambda: SeasonalNaive(season=24), 24, n_windows=2)
    assert res.mae == 0.0 and res.mase_scale == 0.0 and math.isnan(res.mase)
