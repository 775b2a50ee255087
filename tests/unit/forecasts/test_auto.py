"""``auto``: selection by tail-backtest pinball loss, dropping failing/slow candidates."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from forecasting.backtest import cross_validation
from forecasting.errors import InsufficientHistory, NotFitted
from forecasting.forecast import DEFAULT_QUANTILES, Forecast
from forecasting.models import REGISTRY, make
from forecasting.models.auto import AutoForecaster, calibration_factors
from forecasting.models.seasonal_naive import SeasonalNaive
from forecasting.series import Series

QS = (0.05, 0.5, 0.95)


def _seasonal(n: int = 24 * 14, seed: int = 0) -> Series:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 100 + 40 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 3, n)
    return Series(start_s=0, step_s=3600, values=np.maximum(y, 0))


class Raises(SeasonalNaive):
    name = "raises"

    def _fit(self) -> None:
        raise RuntimeError("boom: a third-party crash")


class Slow(SeasonalNaive):
    name = "slow"

    def _fit(self) -> None:
        time.sleep(0.4)
        super()._fit()


class FlatMean(SeasonalNaive):
    """A poor but valid model: the overall mean, residual quantiles."""

    name = "flat"

    def _predict(self, h: int, quantiles: tuple[float, ...]) -> np.ndarray:
        m = float(np.nanmean(self.history.values))
        return np.array([[m + (q - 0.5) * 10] * h for q in quantiles])


class PredictFails(SeasonalNaive):
    name = "predict_fails"
    calls = 0

    def predict(self, h: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Forecast:
        PredictFails.calls += 1
        if PredictFails.calls > 20:  # fine during selection, fails afterwards
            raise ValueError("numerical trouble")
        return super().predict(h, quantiles)


def test_picks_the_better_model_and_reports_it() -> None:
    s = _seasonal()
    auto = AutoForecaster(
        {"flat": FlatMean, "seasonal_naive": lambda: SeasonalNaive(season=24)}, horizon=12,
        top_k=1,
    ).fit(s)
    f = auto.predict(12, QS)
    assert auto.chosen == ("seasonal_naive",)
    assert auto.scores["seasonal_naive"] < auto.scores["flat"]
    assert f.model == "auto" and "chose seasonal_naive" in f.detail and "flat=" in f.detail
    assert f.values.shape == (3, 12) and f.start_s == s.end_s
    # calibration rescales the tails around the chosen model's median, never the median
    ref = SeasonalNaive(season=24).fit(s).predict(12, QS)
    np.testing.assert_allclose(f.median, ref.median)
    assert set(auto.factors) == {0.05, 0.1, 0.9, 0.95}


def test_raising_and_slow_candidates_fall_back_to_seasonal_naive() -> None:
    s = _seasonal()
    auto = AutoForecaster({"raises": Raises, "slow": Slow}, horizon=12, time_budget_s=0.2)
    f = auto.fit(s).predict(12, QS)
    assert auto.chosen == ("seasonal_naive",)
    assert "RuntimeError: boom" in auto.dropped["raises"]
    assert "too slow" in auto.dropped["slow"]
    assert "dropped raises: RuntimeError" in f.detail and "slow: too slow" in f.detail
    # the fallback's forecast, unchanged
    ref = SeasonalNaive().fit(s).predict(12, QS)
    np.testing.assert_allclose(f.values, ref.values)


def test_a_good_candidate_survives_next_to_bad_ones() -> None:
    s = _seasonal()
    auto = AutoForecaster(
        {"raises": Raises, "slow": Slow, "sn24": lambda: SeasonalNaive(season=24)},
        horizon=12, time_budget_s=0.2,
    ).fit(s)
    assert auto.chosen == ("sn24",) and set(auto.dropped) == {"raises", "slow"}


def test_predict_failure_after_fit_falls_back() -> None:
    PredictFails.calls = 0
    s = _seasonal()
    auto = AutoForecaster({"predict_fails": PredictFails}, horizon=12, n_windows=4).fit(s)
    assert auto.chosen == ("predict_fails",)
    PredictFails.calls = 100
    f = auto.predict(12, QS)
    assert "predict_fails: predict failed: ValueError" in f.detail
    assert "chose seasonal_naive" in f.detail and f.values.shape == (3, 12)


def test_update_passes_through_without_reselection() -> None:
    s = _seasonal(24 * 15)
    auto = AutoForecaster(
        {"sn24": lambda: SeasonalNaive(season=24), "flat": FlatMean}, horizon=12
    ).fit(s.slice(0, 24 * 14))
    chosen, scores = auto.chosen, dict(auto.scores)
    f = auto.update(s.slice(24 * 14, 24 * 14 + 5)).predict(6, QS)
    assert f.start_s == s.slice(0, 24 * 14 + 5).end_s
    assert auto.chosen == chosen and auto.scores == scores
    with pytest.raises(NotFitted):
        AutoForecaster().predict(3)


def test_short_history_falls_back_and_tiny_history_is_refused() -> None:
    s = Series(start_s=0, step_s=60, values=[5.0, 6.0, 7.0, 6.0, 5.0])
    f = AutoForecaster(["seasonal_naive"]).fit(s).predict(3, QS)
    assert "too short" in f.detail and f.values.shape == (3, 3)
    with pytest.raises(InsufficientHistory):
        AutoForecaster().fit(Series(start_s=0, step_s=60, values=[1.0]))


def test_unknown_candidate_names_are_dropped() -> None:
    auto = AutoForecaster(["seasonal_naive", "no_such_model"]).fit(_seasonal())
    assert auto.dropped["no_such_model"] == "not registered"
    assert auto.chosen == ("seasonal_naive",)


def test_default_candidates_are_the_registry_less_opt_outs() -> None:
    assert "auto" in REGISTRY and isinstance(make("auto"), AutoForecaster)
    names = set(AutoForecaster()._factories())
    opted_out = {n for n, f in REGISTRY.items() if not getattr(f, "auto_candidate", True)}
    assert names == set(REGISTRY) - {"auto"} - opted_out
    assert "patchtst" not in names  # slow to train: only when named
    assert {"seasonal_naive", "ets", "mstl", "gbm"} <= names


def test_calibration_widens_a_too_narrow_interval() -> None:
    rng = np.random.default_rng(1)
    actual = rng.normal(0, 1, 400)
    # an interval of +-0.4 where +-1.645 is right: the factor ~ 4 is clamped to 3
    vals = np.stack([np.full(400, -0.4), np.zeros(400), np.full(400, 0.4)])
    f = calibration_factors(actual, vals, (0.05, 0.5, 0.95))
    assert f[0.95] == pytest.approx(3.0) and f[0.05] == pytest.approx(3.0)
    vals2 = np.stack([np.full(400, -1.645), np.zeros(400), np.full(400, 1.645)])
    f2 = calibration_factors(actual, vals2, (0.05, 0.5, 0.95))
    assert 0.8 < f2[0.95] < 1.2 and 0.8 < f2[0.05] < 1.2
    # too few points: no calibration
    assert calibration_factors(actual[:5], vals[:, :5], (0.05, 0.5, 0.95))[0.95] == 1.0


def test_auto_on_a_real_trace_is_no_worse_than_seasonal_naive(
    load_trace: Callable[[str], Series],
) -> None:
    """ServeGen m-small, 10-min steps, 1 h ahead, 3 origins: auto (choosing among seasonal
    naive and ETS) beats the reference on MAE and keeps a sane 90 % coverage."""
    s = load_trace("servegen_language_m_small").slice(0, 144 * 8)
    ref = cross_validation(s, lambda: make("seasonal_naive"), 6, n_windows=3, step_size=36)
    res = cross_validation(
        s, lambda: AutoForecaster(["seasonal_naive", "ets"], horizon=6), 6, n_windows=3,
        step_size=36, refit=False,
    )
    assert res.n_ok == 3
    assert res.mae < ref.mae
    assert 0.5 <= res.coverage[0.9] <= 1.0
    assert "chose" in res.detail
