"""The coarse-step strategy shared by ETS, MSTL and GBM: plan, buckets, way back."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.models._coarse import CoarseView, make_plan
from forecasting.series import Series


def test_plan_coarsens_only_long_seasons() -> None:
    one_min = Series(start_s=0, step_s=60, values=np.ones(10))
    assert make_plan(one_min, [1440]).factor == 10  # 144 buckets of 10 min a day
    plan = make_plan(one_min, [1440, 10080])
    assert plan.factor == 10 and plan.seasons == (144, 1008)
    five_min = Series(start_s=0, step_s=300, values=np.ones(10))
    assert make_plan(five_min, [288, 2016]).factor == 2
    hourly = Series(start_s=0, step_s=3600, values=np.ones(10))
    assert make_plan(hourly, [24, 168]).factor == 1
    assert make_plan(hourly, []).factor == 1
    with pytest.raises(ValueError, match="at least 2"):
        make_plan(hourly, [1])


def test_buckets_are_aligned_and_the_partial_one_waits() -> None:
    # starts 3 min past a 10-min boundary and ends 4 min into a bucket
    v = np.arange(41, dtype=np.float64)
    s = Series(start_s=180.0, step_s=60.0, values=v)
    plan = make_plan(s, [20])  # a 20-step season is short enough already
    assert plan.factor == 1
    plan = make_plan(s, [1440])
    view = CoarseView(s, plan)
    assert view.coarse.start_s == 600.0 and view.coarse.step_s == 600.0
    np.testing.assert_allclose(view.coarse.values, [11.5, 21.5, 31.5])  # means of 7..16, ...
    assert view.pending == 41 - 7 - 30
    assert view.end_s == 600.0 * 4
    assert view.coarse_horizon(6) == 1 and view.coarse_horizon(7) == 2


def test_sparse_buckets_are_missing_not_zero() -> None:
    v = np.full(40, 5.0)
    v[10:17] = np.nan  # 7 of 10 missing
    view = CoarseView(Series(start_s=0, step_s=60, values=v), make_plan(
        Series(start_s=0, step_s=60, values=v), [1440]))
    assert np.isnan(view.coarse.values[1]) and view.coarse.values[0] == 5.0
    np.testing.assert_allclose(view.filled, 5.0)


def test_way_back_keeps_the_intraday_profile_and_adds_fine_noise() -> None:
    # a fine-step saw-tooth within every 10-min bucket that a coarse model cannot see
    n = 1440 * 7
    rng = np.random.default_rng(0)
    shape = np.tile(np.arange(10, dtype=np.float64), n // 10)  # 0..9 in each bucket
    v = 100 + shape + rng.normal(0, 2, n)
    s = Series(start_s=0, step_s=60, values=v)
    view = CoarseView(s, make_plan(s, [1440]))
    coarse_q = np.array([[101.5, 101.5], [104.5, 104.5], [107.5, 107.5]])
    fine = view.to_fine(coarse_q, (0.05, 0.5, 0.95), 20)
    median = fine[1]
    # the saw-tooth is back (ratio of profile to bucket mean), not a flat line
    assert median[9] - median[0] > 6
    # the offsets of the outer quantiles grew by the fine noise (in quadrature)
    assert np.all(fine[2] - fine[1] > 3.5) and np.all(fine[1] - fine[0] > 3.5)
