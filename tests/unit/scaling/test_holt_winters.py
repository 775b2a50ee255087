"""The additive Holt-Winters PHPA runs (statsmodels ``fit(optimized=False)`` with the
heuristic initial states), reimplemented in ``autoscaler.core.baselines._holt_winters``."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from phpa_reference import DAY, P, phpa_fit
from statsmodels.tsa.exponential_smoothing.initialization import _initialization_heuristic

from autoscaler.core.baselines._holt_winters import (
    HoltWintersState,
    Smoothing,
    fit_add_add,
    heuristic_init,
    tune_add_add,
)


@pytest.mark.parametrize("n", [2 * DAY, 2 * DAY + 2345, 3 * DAY - 5])
def test_fit_equals_statsmodels_on_a_real_replica_series(
    hpa_replicas_servegen: list[int], n: int
) -> None:
    y = hpa_replicas_servegen[:n]
    lvl, tr, seas = heuristic_init(y, DAY)
    ref = _initialization_heuristic(np.asarray(y, dtype=np.float64), "add", "add", DAY)
    assert abs(lvl - ref[0]) < 1e-9 and abs(tr - ref[1]) < 1e-9
    assert np.max(np.abs(seas - ref[2])) < 1e-9
    for p in (P, Smoothing(1.0, 0.0, 0.0), Smoothing(0.9, 0.6, 0.09)):
        fitted, state = fit_add_add(y, DAY, p)
        sm = phpa_fit(y, DAY, p)
        assert np.max(np.abs(fitted - sm.fittedvalues)) < 1e-9
        assert abs(state.forecast() - sm.forecast(steps=1)[0]) < 1e-9
        assert math.ceil(state.forecast()) == math.ceil(sm.forecast(steps=1)[0])


def test_carrying_the_state_forward_equals_a_fresh_fit(hpa_replicas_servegen: list[int]) -> None:
    y, n0 = hpa_replicas_servegen, 2 * DAY
    _, state = fit_add_add(y[:n0], DAY, P)
    for n in range(n0 + 1, n0 + 241):
        state.update(y[n - 1])
        if n % 60 == 0:
            assert state.forecast() == fit_add_add(y[:n], DAY, P)[1].forecast()


def test_state_feeds_like_the_recursion() -> None:
    # one step by hand: l = a(y - s) + (1 - a)(l + b), b = beta(l' - l) + (1 - beta) b,
    # s' = g(y - l - b) + (1 - g) s; the forecast is l + b + the next season's s
    st = HoltWintersState(Smoothing(0.5, 0.5, 0.5), 10.0, 1.0, [1.0, -1.0])
    assert st.forecast() == 12.0
    assert st.update(14.0) == 12.0
    assert (st.level, st.trend, list(st.seasonals)) == (12.0, 1.5, [-1.0, 2.0])
    assert st.forecast() == 12.5


def test_heuristic_init_needs_the_history_statsmodels_needs() -> None:
    with pytest.raises(ValueError, match="need 14 values"):
        heuristic_init(np.ones(13), 4)  # 10 + 2 * (4 // 2)


def test_tuning_minimises_the_squared_one_step_errors() -> None:
    rng = np.random.default_rng(3)
    y = 10 + 3 * np.tile(np.sin(np.arange(12) / 12 * 2 * np.pi), 20) + rng.normal(0, 0.5, 240)
    best = tune_add_add(y, 12)

    def sse(q: Smoothing) -> float:
        fitted, _ = fit_add_add(y, 12, q)
        return float(((y - fitted) ** 2).sum())

    others = [Smoothing(a, b, g) for a in (0.05, 0.3, 0.7) for b in (0.0, 0.05, 0.2)
              for g in (0.0, 0.1, 0.25)]
    assert sse(best) <= min(sse(q) for q in others) + 1e-9


def test_tuning_keeps_statsmodels_warnings_in() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tune_add_add(np.tile([1.0, 1.0, 1.0, 1.0], 6), 4)
