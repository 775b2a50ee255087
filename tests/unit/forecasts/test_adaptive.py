"""AdaptiveLevel (adaptive conformal inference on the scaling quantile) and relabel."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from forecasting.adaptive import AdaptiveLevel, default_bounds, relabel
from forecasting.forecast import Forecast


def test_a_miss_raises_the_level_a_cover_lowers_it_within_bounds() -> None:
    a = AdaptiveLevel(0.9, step=0.05)
    assert (a.lo, a.hi, a.level) == (0.85, 0.98, 0.9)
    a.expect(7, 10.0)
    assert a.score(7, 10.5) is True  # above the forecast: up by step * q
    assert a.raw == pytest.approx(0.9 + 0.05 * 0.9) and a.level == 0.94  # 0.945 on the grid
    a.expect(8, 10.0)
    assert a.score(8, 9.0) is False  # covered: down by step * (1 - q)
    assert a.raw == pytest.approx(0.945 - 0.005)
    for b in range(9, 30):  # a run of misses stops at hi
        a.expect(b, 0.0)
        a.score(b, 1.0)
    assert a.level == 0.98 and a.raw == 0.98
    for b in range(30, 200):  # a long calm stops at lo
        a.expect(b, 1.0)
        a.score(b, 0.0)
    assert a.level == 0.85
    assert (a.scored, a.missed) == (2 + 21 + 170, 1 + 21)


def test_only_expected_buckets_move_it_and_the_first_expectation_counts() -> None:
    a = AdaptiveLevel(0.9)
    assert a.score(1, 5.0) is None  # nothing was expected for it
    a.expect(2, 4.0)
    a.expect(2, 100.0)  # a later forecast for the same bucket is ignored
    assert a.score(2, math.nan) is None and a.raw == 0.9  # missing: left alone, and gone
    assert a.score(2, 5.0) is None
    a.expect(3, math.inf)  # not a forecast
    assert a.score(3, 1.0) is None
    for b in range(100):
        a.expect(100 + b, 1.0)
    assert len(a._pending) == 64 and min(a._pending) == 136  # the newest 64 only


def test_step_zero_keeps_the_nominal_level_and_bad_settings_fail() -> None:
    a = AdaptiveLevel(0.9, step=0.0)
    for b in range(20):
        a.expect(b, 0.0)
        a.score(b, 1.0)
    assert a.level == 0.9 and a.missed == 20
    assert default_bounds(0.99) == (0.94, 0.99) and default_bounds(0.03) == (0.01, 0.98)
    for kw in ({"lo": 0.95}, {"hi": 0.85}, {"hi": 1.0}, {"step": -0.1}, {"grid": 0.0}):
        with pytest.raises(ValueError):
            AdaptiveLevel(0.9, **kw)  # type: ignore[arg-type]


def test_it_restores_coverage_of_a_model_whose_interval_is_too_narrow() -> None:
    """Outcomes N(0, 1); the model believes N(0, 0.8). Read as it is, its 0.9 quantile is
    exceeded 16 % of the time; the adaptive level brings the share back to about 10 %."""
    rng = np.random.default_rng(3)
    model = NormalDist(0.0, 0.8)
    y = rng.normal(0.0, 1.0, 4000)
    plain = float(np.mean(y > model.inv_cdf(0.9)))
    a = AdaptiveLevel(0.9, step=0.02, lo=0.5, hi=0.99)
    for b, v in enumerate(y):
        a.expect(b, model.inv_cdf(a.level))
        a.score(b, float(v))
    assert plain == pytest.approx(0.155, abs=0.01)  # P(N(0, 1) > 0.8 z_0.9) = 0.15
    assert a.missed / a.scored == pytest.approx(0.10, abs=0.01)
    assert a.level >= 0.95  # z_0.9 / 0.8 = 1.6 = z_0.945: read well above 0.9


def _fc(levels: tuple[float, ...], rows: list[list[float]]) -> Forecast:
    return Forecast(start_s=0.0, step_s=60.0, quantiles=levels, values=np.array(rows),
                    model="m")


def test_levels_keep_their_order_and_relabel_puts_rows_under_the_nominal_ones() -> None:
    a = AdaptiveLevel(0.9)
    nominal = (0.5, 0.9, 0.95)
    assert a.levels(nominal) == nominal
    a.raw = 0.97  # above the warm pool's 0.95: that one reads 0.97 too
    assert a.levels(nominal) == (0.5, 0.97, 0.97)
    read = a.levels(nominal)
    fc = _fc((0.5, 0.97), [[10.0, 11.0], [14.0, 16.0]])
    out = relabel(fc, read, nominal)
    assert out.quantiles == nominal
    np.testing.assert_array_equal(out.quantile(0.9), [14.0, 16.0])
    np.testing.assert_array_equal(out.quantile(0.95), [14.0, 16.0])
    assert "q0.9 read at q0.97" in out.detail
    a.raw = 0.86
    assert a.levels((0.3, 0.88, 0.9, 0.95)) == (0.3, 0.86, 0.86, 0.95)
    assert relabel(fc, (0.5, 0.97), (0.5, 0.97)) is fc  # nothing moved
    with pytest.raises(ValueError, match=r"not 0\.92"):
        relabel(fc, (0.5, 0.92), (0.5, 0.9))
    with pytest.raises(ValueError, match="2 levels read for 3"):
        relabel(fc, (0.5, 0.97), nominal)
