"""Accuracy metrics: known values, gaps ignored, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forecasting.scoring import coverage, mae, mase, mase_scale, pinball, rmse, smape

NAN = float("nan")


def test_point_metrics_on_known_values() -> None:
    a = [1.0, 2.0, 3.0, 4.0]
    p = [2.0, 2.0, 1.0, 4.0]
    assert mae(a, p) == pytest.approx(0.75)
    assert rmse(a, p) == pytest.approx(math.sqrt(5 / 4))
    # |1-2|*2/3, 0, |3-1|*2/4, 0 -> mean * 100
    assert smape(a, p) == pytest.approx(100 * (2 / 3 + 1.0) / 4)
    assert smape([0.0, 0.0], [0.0, 0.0]) == 0.0


def test_gaps_never_count_as_errors() -> None:
    a = [1.0, NAN, 3.0]
    p = [1.0, 1000.0, 4.0]
    assert mae(a, p) == pytest.approx(0.5)
    assert rmse(a, p) == pytest.approx(math.sqrt(0.5))
    assert pinball(a, p, 0.5) == pytest.approx(0.25)
    assert coverage(a, [0.0, 0.0, 0.0], [2.0, 2.0, 2.0]) == pytest.approx(0.5)
    assert math.isnan(mae([NAN], [1.0]))
    assert math.isnan(coverage([NAN], [0.0], [1.0]))


def test_pinball_is_asymmetric() -> None:
    # under-forecast by 10 at q=0.9 costs 9; over-forecast by 10 costs 1
    assert pinball([10.0], [0.0], 0.9) == pytest.approx(9.0)
    assert pinball([0.0], [10.0], 0.9) == pytest.approx(1.0)
    assert pinball([5.0], [5.0], 0.1) == 0.0


def test_mase_scale_uses_the_season() -> None:
    y = np.tile([0.0, 10.0], 10)
    assert mase_scale(y, 2) == 0.0  # a perfect seasonal naive
    assert mase_scale(y, 1) == pytest.approx(10.0)
    assert mase_scale([1.0, NAN, 3.0, 6.0], 1) == pytest.approx(3.0)  # gap pairs dropped
    assert mase([1.0, 2.0], [2.0, 4.0], 1.5) == pytest.approx(1.0)
    assert math.isnan(mase([1.0], [2.0], 0.0))


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        mae([1.0, 2.0], [1.0])
