"""The reference model: seasonal naive with empirical residual quantiles."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.errors import InsufficientHistory, NotFitted
from forecasting.models import make
from forecasting.models.seasonal_naive import SeasonalNaive
from forecasting.series import Series


def test_repeats_the_last_season() -> None:
    s = Series(start_s=0, step_s=1, values=np.tile([1.0, 5.0, 9.0], 4))
    f = SeasonalNaive(season=3).fit(s).predict(7, quantiles=[0.5])
    np.testing.assert_array_equal(f.median, [1, 5, 9, 1, 5, 9, 1])
    assert f.start_s == 12 and f.step_s == 1 and f.model == "seasonal_naive"


def test_quantiles_come_from_same_lag_errors() -> None:
    rng = np.random.default_rng(3)
    base = np.tile(np.array([10.0, 50.0, 90.0, 50.0]), 300)
    s = Series(start_s=0, step_s=60, values=base + rng.normal(0, 2, base.size))
    f = SeasonalNaive(season=4).fit(s).predict(4, quantiles=[0.05, 0.5, 0.95])
    width = f.quantile(0.95) - f.quantile(0.05)
    # the error of a lag-4 difference of N(0, 2) noise has sd 2*sqrt(2): 90 % width ~ 9.3
    assert np.all((width > 6) & (width < 13))


def test_gaps_are_bridged_from_earlier_seasons() -> None:
    v = np.tile([1.0, 2.0, 3.0], 5)
    v[-2] = np.nan
    f = SeasonalNaive(season=3).fit(Series(start_s=0, step_s=1, values=v)).predict(3)
    np.testing.assert_array_equal(f.median, [1, 2, 3])


def test_detects_the_daily_season() -> None:
    t = np.arange(24 * 10)
    s = Series(start_s=0, step_s=3600, values=100 + 50 * np.sin(2 * np.pi * t / 24))
    m = make("seasonal_naive").fit(s)
    assert m.predict(1).detail == "season=24"


def test_update_moves_the_origin_without_refit() -> None:
    s = Series(start_s=0, step_s=1, values=np.tile([1.0, 2.0], 5))
    m = SeasonalNaive(season=2).fit(s)
    m.update(Series(start_s=10, step_s=1, values=np.array([7.0])))
    f = m.predict(2, quantiles=[0.5])
    assert f.start_s == 11
    np.testing.assert_array_equal(f.median, [2, 7])


def test_errors() -> None:
    with pytest.raises(NotFitted):
        SeasonalNaive().predict(3)
    with pytest.raises(InsufficientHistory) as exc:
        SeasonalNaive(season=24).fit(Series(start_s=0, step_s=1, values=np.ones(10)))
    assert exc.value.needed == 25 and exc.value.got == 10
    with pytest.raises(ValueError, match="season"):
        SeasonalNaive(season=0)
    with pytest.raises(KeyError, match="available"):
        make("nope")
